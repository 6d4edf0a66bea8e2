"""CodeFormer backend: the official weights from the model repository, run with torch.

Model repository layout: `codeformer/codeformer.pth`, the official release checkpoint (a dict with
`params_ema`, as published with CodeFormer v0.1.0). Without it, `load()` raises ModelMissing naming
the path; the service never falls back to another restorer.
Fidelity is CodeFormer's own `w` (the weight of the encoder-feature fusion), not a pixel blend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from likeness.core.errors import FailedPrecondition, ModelMissing
from likeness.core.store import sha256_file

WEIGHTS_FILE = "codeformer.pth"
INPUT_SIZE = 512


def load_state_dict(path: Path) -> dict:
    """The weights of a BasicSR-style release checkpoint (`params_ema`, else `params`, else as is)."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("params_ema", "params"):
        if isinstance(checkpoint, dict) and key in checkpoint:
            return checkpoint[key]
    return checkpoint


class CodeFormerRestorer:
    name = "codeformer"
    input_size = INPUT_SIZE

    def __init__(self, model_dir: Path | None, threads: int = 0):
        self.model_dir = model_dir
        self.threads = threads
        self.net = None
        self.identity = self.name  # + the weights' digest once loaded

    @property
    def weights_path(self) -> Path:
        return (self.model_dir or Path("codeformer")) / WEIGHTS_FILE

    def describe(self) -> dict:
        return {"restorer": self.name, "weights": str(self.weights_path)}

    def load(self) -> None:
        if self.net is not None:
            return
        if self.model_dir is None or not self.weights_path.is_file():
            raise ModelMissing(self.name, [str(self.weights_path)],
                               "put the official CodeFormer release checkpoint there (model repository "
                               "folder `codeformer`)")
        import torch

        from likeness.restoration.restorers.codeformer_arch import CodeFormer

        if self.threads:
            torch.set_num_threads(self.threads)
        try:  # read the file before building the network: a bad file fails fast
            state = load_state_dict(self.weights_path)
            net = CodeFormer()
            net.load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable or mismatched file is the same error
            raise FailedPrecondition("model", f"{self.weights_path} is not a CodeFormer checkpoint: "
                                              f"{str(exc)[:300]}") from None
        self.net = net.eval()
        self.identity = f"{self.name}:{sha256_file(self.weights_path)[0][:16]}"

    def restore(self, face: np.ndarray, fidelity: float) -> np.ndarray:
        import torch

        self.load()
        x = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        with torch.inference_mode():
            y = self.net(x, w=float(fidelity))
        out = ((y[0].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
        return out.numpy()
