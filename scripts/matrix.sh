#!/usr/bin/env bash
# The engine-version matrix: per release, an overlay folder (.cache/matrix/<engine>-<version>, made once with
# `pip install --no-deps --target`, reused after) shadows the venv's engine through PYTHONPATH, that release's suite
# runs (vLLM: integration_tests/test_vllm_const_pairs.py + the registration report; SGLang: the plugin, drafts and
# targets tests), and its row is merged into benchmarks/results/matrix.json. One line per version is printed.
#   bash scripts/matrix.sh [--engine vllm|sglang|all] [--versions V ...] [--out PATH] [--timeout S]
# vLLM runs take /tmp/eagle3-engine.lock (one vLLM engine at a time on the machine). Logic: scripts/matrix_report.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "${EAGLE3_VENV:-$ROOT/.venv}/bin/activate"
cd "$ROOT"
export EAGLE3_CACHE="${EAGLE3_CACHE:-$ROOT/.cache}"
exec python scripts/matrix_report.py "$@"
