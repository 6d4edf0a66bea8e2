"""GFPGAN backend: the official v1.4 weights from the model repository, run with torch.

Model repository layout: `gfpgan/GFPGANv1.4.pth`, the official release checkpoint (a dict with
`params_ema`; v1.3 has the same layout). Without it, `load()` raises ModelMissing naming the path;
the service never falls back to another restorer. GFPGAN has no fidelity input, so fidelity blends
pixels (`restorers/base.py`). The StyleGAN noise is the checkpoint's fixed noise buffers, so equal
inputs give equal outputs (GFPGAN's own inference draws fresh noise per call).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from likeness.core.errors import FailedPrecondition, ModelMissing
from likeness.core.store import sha256_file
from likeness.restoration.restorers.base import blend_fidelity

WEIGHTS_FILE = "GFPGANv1.4.pth"
INPUT_SIZE = 512


class GFPGANRestorer:
    name = "gfpgan"
    input_size = INPUT_SIZE

    def __init__(self, model_dir: Path | None, threads: int = 0):
        self.model_dir = model_dir
        self.threads = threads
        self.net = None
        self.identity = self.name  # + the weights' digest once loaded

    @property
    def weights_path(self) -> Path:
        return (self.model_dir or Path("gfpgan")) / WEIGHTS_FILE

    def describe(self) -> dict:
        return {"restorer": self.name, "weights": str(self.weights_path)}

    def load(self) -> None:
        if self.net is not None:
            return
        if self.model_dir is None or not self.weights_path.is_file():
            raise ModelMissing(self.name, [str(self.weights_path)],
                               "put the official GFPGAN v1.4 release checkpoint there (model repository "
                               "folder `gfpgan`)")
        import torch

        from likeness.restoration.restorers.codeformer import load_state_dict
        from likeness.restoration.restorers.gfpgan_arch import GFPGANv1Clean

        if self.threads:
            torch.set_num_threads(self.threads)
        try:  # read the file before building the network: a bad file fails fast
            state = load_state_dict(self.weights_path)
            net = GFPGANv1Clean()
            net.load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable or mismatched file is the same error
            raise FailedPrecondition("model", f"{self.weights_path} is not a GFPGAN v1.3/v1.4 checkpoint: "
                                              f"{str(exc)[:300]}") from None
        self.net = net.eval()
        self.identity = f"{self.name}:{sha256_file(self.weights_path)[0][:16]}"

    def restore(self, face: np.ndarray, fidelity: float) -> np.ndarray:
        import torch

        self.load()
        if fidelity >= 1.0:
            return face.copy()
        x = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        with torch.inference_mode():
            y = self.net(x)
        out = ((y[0].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return blend_fidelity(face, out, fidelity)
