#!/usr/bin/env bash
# The GPU check, ready for a machine with an NVIDIA GPU and PyTorch preinstalled but no package
# index: installs the wheels that bench/gpu_wheels.sh downloaded (only packages missing there,
# without dependencies), then runs bench/gpu_check.py under a time limit (whole script < 8 min).
#   bash bench/gpu_wheels.sh            # here, with the network: ~11 MiB into bench/gpu-wheels/
#   bash bench/gpu_check.sh [args]      # there: args go to bench/gpu_check.py (--compile, --batches)
#   bash bench/gpu_check.sh --dry-run   # anywhere: install check + the toy-size run on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-bench/gpu-wheels}
LIMIT_S=${LIMIT_S:-450}

missing=()
for wheel in "$WHEELS"/*.whl; do
  [ -e "$wheel" ] || { echo "no wheels in $WHEELS: run bench/gpu_wheels.sh first" >&2; exit 2; }
  name=$(basename "$wheel" | cut -d- -f1)
  "$PY" -m pip show -q "$name" >/dev/null 2>&1 || missing+=("$wheel")
done
if [ ${#missing[@]} -gt 0 ]; then
  "$PY" -m pip install -q --no-index --no-deps "${missing[@]}"
fi
"$PY" -c "import diffusers, pydantic_settings; print('diffusers', diffusers.__version__)"

if [ "${1:-}" = "--dry-run" ]; then
  shift
  exec timeout "$LIMIT_S" "$PY" bench/gpu_check.py --device cpu --tiny --compile none "$@"
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
exec timeout "$LIMIT_S" "$PY" bench/gpu_check.py --device cuda "$@"
