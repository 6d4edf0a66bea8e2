"""Base models a run may train on: any `sdxl` or `sd15` model in the model repository.

The tiny random-weight models (`tiny-sdxl`, `tiny-sd15`) are built and registered on first use,
as the generation service does, so tests and the demo need no downloaded weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from likeness.core.errors import InvalidArgument, NotFound

TRAINABLE_KINDS = ("sdxl", "sd15")


@dataclass(frozen=True)
class BaseModel:
    name: str
    kind: str
    path: Path
    digest: str
    native_resolution: int
    tiny: bool


class BaseModels:
    def __init__(self, repository):
        """`repository` is a likeness.core.modelrepo.ModelRepository."""
        self.repository = repository

    def resolve(self, name: str) -> BaseModel:
        from likeness.diffusion.tiny_sdxl import TINY_MODELS, ensure_tiny_model

        if name in TINY_MODELS:
            ensure_tiny_model(self.repository, name)
        try:
            spec = self.repository.spec(name)
        except (NotFound, InvalidArgument):
            available = [s.name for s in self.repository.list() if s.kind in TRAINABLE_KINDS]
            raise InvalidArgument("spec.base_model", f"unknown base model {name!r}; trainable models in the "
                                  f"repository: {', '.join(available) or 'none'} (or tiny-sdxl, tiny-sd15)") from None
        if spec.kind not in TRAINABLE_KINDS:
            raise InvalidArgument("spec.base_model", f"model {name!r} has kind {spec.kind!r}; LoRA training "
                                  f"needs one of {', '.join(TRAINABLE_KINDS)}")
        path = Path(self.repository.fetch(name))  # ModelMissing names any missing file
        return BaseModel(name, spec.kind, path, spec.digest, native_resolution(path, spec.config),
                         bool(spec.config.get("random_weights", False)))


def native_resolution(path: Path, config: dict) -> int:
    """The model's own image side: model.yaml `default_size`, else UNet sample size x VAE factor."""
    if config.get("default_size"):
        return int(config["default_size"])
    unet = json.loads((path / "unet" / "config.json").read_text())
    vae = json.loads((path / "vae" / "config.json").read_text())
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
