"""Builds restorers by name; network weights come from the model repository via `model_dir`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from likeness.core.errors import InvalidArgument, ModelMissing
from likeness.restoration.restorers.base import FaceRestorer

RESTORERS = ("classical", "codeformer", "gfpgan")


def create_restorer(name: str, model_dir: Callable[[str], Path | None], *, threads: int = 1,
                    sharpen: float = 1.0, local_contrast: float = 0.0, device: str = "cpu",
                    dtype: str = "auto") -> FaceRestorer:
    """`model_dir(name)` returns the local folder of a model (or None, or raises ModelMissing);
    `device`/`dtype` place the network restorers (settings values, `auto` dtype as in core.devices)."""
    if name == "classical":
        from likeness.restoration.restorers.classical import ClassicalRestorer

        return ClassicalRestorer(sharpen=sharpen, local_contrast=local_contrast)
    if name == "codeformer":
        from likeness.restoration.restorers.codeformer import WEIGHTS_FILE, CodeFormerRestorer

        return CodeFormerRestorer(_folder(model_dir, name, WEIGHTS_FILE), threads=threads, device=device, dtype=dtype)
    if name == "gfpgan":
        from likeness.restoration.restorers.gfpgan import WEIGHTS_FILE, GFPGANRestorer

        return GFPGANRestorer(_folder(model_dir, name, WEIGHTS_FILE), threads=threads, device=device, dtype=dtype)
    raise InvalidArgument("model", f"unknown restorer {name!r}; one of {', '.join(RESTORERS)}")


def _folder(model_dir: Callable[[str], Path | None], name: str, weights: str) -> Path | None:
    try:
        return model_dir(name)
    except ModelMissing as exc:
        raise ModelMissing(name, exc.missing, f"the folder must hold {weights} (the official release "
                                              "checkpoint) and a model.yaml (ModelRepository.register)") from None
