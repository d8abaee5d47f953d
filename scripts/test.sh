#!/usr/bin/env bash
# The test command: set up the environment (idempotent), then run every test (unit, integration, benchmarks in
# fast mode). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
# shellcheck disable=SC1091
. "${EAGLE3_VENV:-$ROOT/.venv}/bin/activate"
cd "$ROOT"
export EAGLE3_CACHE="${EAGLE3_CACHE:-$ROOT/.cache}"
exec python -m pytest -ra --durations=50 "$@"
