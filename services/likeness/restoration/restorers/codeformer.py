"""CodeFormer backend: the official weights from the model repository, run with torch.

Model repository layout: `codeformer/codeformer.pth`, the official release checkpoint (a dict with
`params_ema`, as published with CodeFormer v0.1.0). Without it, `load()` raises ModelMissing naming
the path; the service never falls back to another restorer.
Fidelity is CodeFormer's own `w` (the weight of the encoder-feature fusion), not a pixel blend: at
w = 1 the face is still decoded through the codebook, as the official inference does. The forward
pass applies AdaIN to the looked-up codes, as the official inference calls it (`adain=True`).
"""

from __future__ import annotations

import numpy as np

from likeness.restoration.restorers.network import INPUT_SIZE, NetworkRestorer, load_state_dict

WEIGHTS_FILE = "codeformer.pth"
__all__ = ["CodeFormerRestorer", "INPUT_SIZE", "WEIGHTS_FILE", "load_state_dict"]


class CodeFormerRestorer(NetworkRestorer):
    name = "codeformer"
    weights_file = WEIGHTS_FILE
    checkpoint_label = "CodeFormer"
    keeps_input_at_full_fidelity = False

    def build(self):
        from likeness.restoration.restorers.codeformer_arch import CodeFormer

        return CodeFormer()

    def forward(self, x, fidelity: float):
        return self.net(x, w=float(fidelity), adain=True)

    def restore(self, face: np.ndarray, fidelity: float) -> np.ndarray:
        return self.run(face, fidelity)
