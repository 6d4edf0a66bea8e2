"""Where a model runs: the `device` and `dtype` settings every model-backed service reads.

`device` is a torch device string (`cpu`, `cuda`, `cuda:1`); `dtype` is `auto` (float16 on CUDA,
float32 on the CPU), `float32`, `float16` or `bfloat16`. float16 and bfloat16 also run on the
CPU (slower than float32 there, but the same code paths as a GPU pod, so dtype bugs show up in
tests on any machine).
"""

from __future__ import annotations

import re

from likeness.core.errors import FailedPrecondition

DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICE_PATTERN = r"^(cpu|cuda(:\d+)?)$"
DTYPE_PATTERN = "^(" + "|".join(DTYPES) + ")$"


def torch_dtype(name: str, device: str):
    """The torch dtype of setting value `name` on `device` (`auto`: float16 on CUDA, else float32)."""
    import torch

    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise FailedPrecondition("dtype", f"unknown dtype {name!r}; known: {', '.join(DTYPES)}")
    return getattr(torch, name)


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def require_device(device: str, setting: str) -> str:
    """`device` when this machine has it; FAILED_PRECONDITION naming `setting` otherwise (a pod
    configured for a GPU it lacks fails at start-up, never silently on the CPU)."""
    if not re.match(DEVICE_PATTERN, device):
        raise FailedPrecondition(setting, f"{device!r} is not a device; use cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise FailedPrecondition(setting, f"{device} is not available on this node "
                                              f"({torch.cuda.device_count()} CUDA devices)")
    return device

