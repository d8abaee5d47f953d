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
# The pipeline's pretrained tiny targets are shipped (scripts/make_fixtures.py tiny): seed the cache with them.
mkdir -p "$EAGLE3_CACHE/tiny"
for t in "$ROOT"/tests/fixtures/tiny/*/; do
  key="$(basename "$t")"
  if [ ! -e "$EAGLE3_CACHE/tiny/$key" ]; then
    cp -r "$t" "$EAGLE3_CACHE/tiny/.$key.copy" && mv "$EAGLE3_CACHE/tiny/.$key.copy" "$EAGLE3_CACHE/tiny/$key"
  fi
done
exec python -m pytest -ra --durations=50 "$@"
