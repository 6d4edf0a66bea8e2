"""What the network restorers (CodeFormer, GFPGAN) share: weights from the model repository, a
strict load that names a missing or mismatched file, and the 512x512 RGB <-> [-1, 1] tensor round
trip. A subclass says which file, which network, and how fidelity enters the forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from likeness.core.devices import dtype_name, require_device, torch_dtype
from likeness.core.errors import FailedPrecondition, ModelMissing
from likeness.core.store import sha256_file

INPUT_SIZE = 512


def load_state_dict(path: Path) -> dict:
    """The weights of a BasicSR-style release checkpoint (`params_ema`, else `params`, else as is)."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("params_ema", "params"):
        if isinstance(checkpoint, dict) and key in checkpoint:
            return checkpoint[key]
    return checkpoint


class NetworkRestorer:
    name = ""
    weights_file = ""
    checkpoint_label = ""  # how the error names the expected checkpoint
    input_size = INPUT_SIZE
    keeps_input_at_full_fidelity = True  # a pixel blend with the input (CodeFormer overrides)

    def __init__(self, model_dir: Path | None, threads: int = 0, device: str = "cpu", dtype: str = "auto"):
        self.model_dir = model_dir
        self.threads = threads
        self.device = require_device(device, "LIKENESS_RESTORATION_DEVICE")
        self.dtype = torch_dtype(dtype, self.device)
        self.net = None
        self.identity = self.name  # + the weights' digest once loaded

    @property
    def weights_path(self) -> Path:
        return (self.model_dir or Path(self.name)) / self.weights_file

    def describe(self) -> dict:
        return {"restorer": self.name, "weights": str(self.weights_path), "device": self.device,
                "dtype": dtype_name(self.dtype)}

    def build(self):
        """The untrained network (subclasses)."""
        raise NotImplementedError

    def forward(self, x, fidelity: float):
        """The network's output for a (1, 3, 512, 512) tensor in [-1, 1] (subclasses)."""
        raise NotImplementedError

    def load(self) -> None:
        if self.net is not None:
            return
        if self.model_dir is None or not self.weights_path.is_file():
            raise ModelMissing(self.name, [str(self.weights_path)],
                               f"put the official {self.checkpoint_label} release checkpoint there "
                               f"(model repository folder `{self.name}`)")
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        try:  # read the file before building the network: a bad file fails fast
            state = load_state_dict(self.weights_path)
            net = self.build()
            net.load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable or mismatched file is the same error
            raise FailedPrecondition("model", f"{self.weights_path} is not a {self.checkpoint_label} checkpoint: "
                                              f"{str(exc)[:300]}") from None
        self.net = net.to(device=self.device, dtype=self.dtype).eval()
        self.identity = f"{self.name}:{sha256_file(self.weights_path)[0][:16]}"

    def run(self, face: np.ndarray, fidelity: float) -> np.ndarray:
        """HxWx3 uint8 face in, the network's HxWx3 uint8 face out."""
        import torch

        self.load()
        x = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        with torch.inference_mode():
            y = self.forward(x.to(device=self.device, dtype=self.dtype), fidelity).float().cpu()
        return ((y[0].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
