"""Settings of the restoration service (`LIKENESS_RESTORATION_*`), read once at start-up."""

from __future__ import annotations

from pydantic import Field

from likeness.core.devices import DEVICE_PATTERN, DTYPE_PATTERN
from likeness.core.settings import CommonSettings


class RestorationSettings(CommonSettings):
    # Default restorer for Restore requests that name none: `classical` (embedded, no weights),
    # `codeformer` (model repository folder `codeformer`), `gfpgan` (folder `gfpgan`, GFPGAN v1.4).
    # The default is loaded during warm-up, so missing weights fail start-up, never a request.
    restoration_backend: str = Field("classical", pattern="^(classical|codeformer|gfpgan)$")
    # Warm-up also runs one 512 px inference of a network restorer, so first-call allocations and
    # kernel selection happen before SERVING. Off: SERVING once the weights are loaded (still
    # checked at start-up), and the first request pays that; on a CPU that inference costs as much
    # as a request (CodeFormer: tens of seconds on one thread).
    restoration_warmup_inference: bool = True
    # Store prefix for outputs of requests without `output_prefix`.
    restoration_scratch_prefix: str = "scratch/restoration"
    # Threads for a network restorer's torch inference (one pod = one core's worth by default).
    restoration_threads: int = Field(1, ge=1, le=64)
    # Where CodeFormer/GFPGAN run: torch device and dtype (`auto` = float16 on CUDA, float32 on the
    # CPU; or float32, float16, bfloat16). The classical restorer has no network and ignores them.
    restoration_device: str = Field("cpu", pattern=DEVICE_PATTERN)
    restoration_dtype: str = Field("auto", pattern=DTYPE_PATTERN)
    # Classical restorer: unsharp-mask amount on a noise-free crop (lowered as noise rises) and
    # wide-radius local-contrast amount (restorers/classical.py).
    restoration_sharpen: float = Field(1.0, ge=0.0, le=3.0)
    restoration_local_contrast: float = Field(0.0, ge=0.0, le=1.0)
    # Concurrent mask/composite items (CPU work off the event loop).
    restoration_workers: int = Field(2, ge=1, le=64)
