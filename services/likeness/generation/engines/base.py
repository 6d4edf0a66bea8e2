"""What an engine runs: one batch of compatible images (`BatchKey`, `ImageItem`s) -> `ImageResult`s,
and the `Engine` protocol both runtimes (torch, onnxruntime) implement."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from likeness.core.backend import ModelBackend

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


class Engine(ModelBackend, Protocol):
    """A runtime of the denoising loop. `load()` prepares the runtime itself (threads, logging);
    models load per request through `load_model`, on the batch worker thread."""

    name: str
    supports_adapters: bool  # LoRA adapters can be applied to the loaded weights
    supports_reference: bool  # IP-Adapter reference images can guide generation

    def load_model(self, folder: Any, spec: Any) -> Any:
        """The diffusers pipeline of model `spec` read from `folder`, ready to run."""
        ...

    def set_ip_adapter(self, model: Any, name: str, folder: Any = None, config: dict | None = None) -> None: ...

    def run(self, model: Any, refiner: Any, key: BatchKey, items: list[ImageItem], files: dict,
            controlnets: Any = None) -> list[ImageResult]: ...
