"""What an engine runs: one batch of compatible images (`BatchKey`, `ImageItem`s) -> `ImageResult`s."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# progress(stage, done, total): called from the worker thread after each denoising step
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BatchKey:
    """Everything one pipeline call shares; requests with equal keys are batched together."""

    model: str
    task: str
    width: int
    height: int
    steps: int
    sampler: str
    guidance_scale: float
    strength: float | None
    refiner: str  # refiner model name, "" for none
    refiner_fraction: float
    adapters: tuple[tuple[str, float], ...]  # (adapter id, scale), in request order
    reference_scale: float | None  # None: no IP-Adapter
    ip_adapter: str = ""  # IP-Adapter model name when reference_scale is set
    controls: tuple[tuple[str, float, float, float], ...] = ()  # (ControlNet, scale, start, end)


@dataclass
class ImageItem:
    """One image of one request (its own seed and prompts); images are at the key's size."""

    seed: int
    prompt: str
    negative_prompt: str
    init_image: np.ndarray | None = None  # HxWx3 uint8, for image tasks
    mask: np.ndarray | None = None  # HxW bool, True = repaint
    noise_injection: float = 0.0
    reference_image: np.ndarray | None = None
    control_images: tuple[np.ndarray, ...] = ()  # one per BatchKey.controls, at the key's size
    progress: Progress | None = None
    queued_at: float = 0.0
    adapter_files: dict = field(default_factory=dict)  # adapter id -> parsed LoraFile, held until run


@dataclass
class ImageResult:
    rgb: np.ndarray  # HxWx3 uint8
    batch_size: int
    timings: dict = field(default_factory=dict)  # queue, text_encoding, denoising, decoding (seconds)
