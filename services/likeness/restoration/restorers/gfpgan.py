"""GFPGAN backend: not implemented in this build.

GFPGAN v1.4 (the "clean" StyleGAN2 decoder with a U-Net encoder and SFT conditioning) would load
`gfpgan/GFPGANv1.4.pth` from the model repository. Its architecture is not written yet, so asking
for it fails up front with FAILED_PRECONDITION naming what is missing, whether or not the weights
are present: it never falls back to another restorer. CodeFormer (`codeformer`) is the learned
restorer this build supports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from likeness.core.errors import FailedPrecondition, ModelMissing

WEIGHTS_FILE = "GFPGANv1.4.pth"


class GFPGANRestorer:
    name = "gfpgan"
    input_size = 512

    def __init__(self, model_dir: Path | None):
        self.model_dir = model_dir

    @property
    def weights_path(self) -> Path:
        return (self.model_dir or Path("gfpgan")) / WEIGHTS_FILE

    def describe(self) -> dict:
        return {"restorer": self.name, "weights": str(self.weights_path), "implemented": False}

    def load(self) -> None:
        if self.model_dir is None or not self.weights_path.is_file():
            raise ModelMissing(self.name, [str(self.weights_path)],
                               "and the GFPGAN architecture is not implemented in this build; use "
                               "model 'codeformer' or 'classical'")
        raise FailedPrecondition("model", "restorer 'gfpgan': the GFPGAN architecture is not implemented in "
                                          "this build; use model 'codeformer' or 'classical'")

    def restore(self, face: np.ndarray, fidelity: float) -> np.ndarray:
        self.load()
        raise AssertionError("unreachable")  # load() always raises
