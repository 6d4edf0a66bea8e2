"""GFPGAN backend: the official v1.4 weights from the model repository, run with torch.

Model repository layout: `gfpgan/GFPGANv1.4.pth`, the official release checkpoint (a dict with
`params_ema`; v1.3 has the same layout). Without it, `load()` raises ModelMissing naming the path;
the service never falls back to another restorer. GFPGAN has no fidelity input, so fidelity blends
pixels (`restorers/base.py`). The StyleGAN noise is the checkpoint's fixed noise buffers, so equal
inputs give equal outputs (GFPGAN's own inference draws fresh noise per call).
"""

from __future__ import annotations

import numpy as np

from likeness.restoration.restorers.base import blend_fidelity
from likeness.restoration.restorers.network import INPUT_SIZE, NetworkRestorer

WEIGHTS_FILE = "GFPGANv1.4.pth"
__all__ = ["GFPGANRestorer", "INPUT_SIZE", "WEIGHTS_FILE"]


class GFPGANRestorer(NetworkRestorer):
    name = "gfpgan"
    weights_file = WEIGHTS_FILE
    checkpoint_label = "GFPGAN v1.3/v1.4"

    def build(self):
        from likeness.restoration.restorers.gfpgan_arch import GFPGANv1Clean

        return GFPGANv1Clean()

    def forward(self, x, fidelity: float):
        return self.net(x)

    def restore(self, face: np.ndarray, fidelity: float) -> np.ndarray:
        self.load()
        if fidelity >= 1.0:
            return face.copy()
        return blend_fidelity(face, self.run(face, fidelity), fidelity)
