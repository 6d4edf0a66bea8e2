"""Quality modes: documented presets of steps, refiner pass and size (docs/api/generation.md).

Explicit request fields override a preset. Sizes scale the model's default side (1024 for SDXL,
512 for SD 1.5, 64 for tiny-sdxl), rounded down to a multiple of 8.
"""

from __future__ import annotations

from dataclasses import dataclass

from likeness.api.v1 import generation_pb2 as pb


@dataclass(frozen=True)
class Preset:
    steps: int
    refiner: bool
    size_scale: float


PRESETS: dict[str, Preset] = {
    "fast": Preset(steps=15, refiner=False, size_scale=1.0),
    "standard": Preset(steps=30, refiner=False, size_scale=1.0),
    "quality": Preset(steps=40, refiner=True, size_scale=1.0),
    "ultra": Preset(steps=60, refiner=True, size_scale=1.25),
}
# QualityMode -> preset name; unset means standard. The one place a mode is named (requests, PNG metadata).
MODE_NAMES = {pb.QUALITY_MODE_UNSPECIFIED: "standard", pb.QUALITY_MODE_FAST: "fast",
              pb.QUALITY_MODE_STANDARD: "standard", pb.QUALITY_MODE_QUALITY: "quality", pb.QUALITY_MODE_ULTRA: "ultra"}
DEFAULT_MODE = "standard"

# FAST when an LCM-LoRA is registered for the model: the LCM sampler in its few-step regime
# (the LCM-LoRA authors sample in 4-8 steps with guidance 1-2; 1 turns classifier-free guidance off,
# which also halves the UNet work per step).
LCM_STEPS = 6
LCM_GUIDANCE = 1.0
LCM_MODE = "fast"

# classifier-free guidance scale when the request leaves it unset, by model family
DEFAULT_GUIDANCE = {"sdxl": 5.0, "sd15": 7.5}
DEFAULT_REFINER_FRACTION = 0.2
DEFAULT_STRENGTH = {"image-to-image": 0.75, "inpaint": 0.99}
DEFAULT_REFERENCE_SCALE = 0.6
DEFAULT_SIZE = {"sdxl": 1024, "sd15": 512}


def preset_size(default_side: int, preset: Preset) -> int:
    return max(64, int(default_side * preset.size_scale) // 8 * 8)
