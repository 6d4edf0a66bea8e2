#!/usr/bin/env bash
# Wheels for bench/gpu_check.sh, downloaded here for a GPU machine that may reach no package index:
# Python 3.12 with torch, transformers, peft, accelerate, safetensors, numpy, pillow, grpcio and
# prometheus-client preinstalled, but no diffusers. Only what the generation engine imports beyond
# that, pure-Python (or manylinux cp312) and without dependencies, so nothing preinstalled changes
# (huggingface-hub comes with transformers there; gpu_check.sh installs only what is missing).
# Usage: bash bench/gpu_wheels.sh [folder]   (default bench/gpu-wheels, ignored by git)
set -euo pipefail
DEST=${1:-bench/gpu-wheels}
PIP=${PIP:-.venv/bin/pip}
LIMIT_MIB=64
mkdir -p "$DEST"
"$PIP" download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --implementation cp --no-deps -d "$DEST" \
  diffusers==0.42.1 importlib-metadata==10.2.0 zipp==4.1.2 regex==2026.11.19 \
  pydantic==2.14.3 pydantic-core==2.50.4 pydantic-settings==2.16.3 typing-inspection==0.4.5 \
  annotated-types==0.8.0 python-dotenv==1.2.4 PyYAML==6.0.3
total=$(du -sm "$DEST" | cut -f1)
echo "$(ls "$DEST" | wc -l) wheels, ${total} MiB in $DEST"
if [ "$total" -ge "$LIMIT_MIB" ]; then
  echo "over the ${LIMIT_MIB} MiB that may travel to the GPU machine" >&2
  exit 1
fi
