#!/usr/bin/env bash
# The main job: set up the CPU environment (idempotent), then run `eagle3-train demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
# shellcheck disable=SC1091
. "${EAGLE3_VENV:-$ROOT/.venv}/bin/activate"
exec eagle3-train demo --workdir "${EAGLE3_DEMO_DIR:-$ROOT/eagle3-demo}" "$@"
