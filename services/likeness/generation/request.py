"""A generation request as the domain sees it, and its validation (diffusers' `check_inputs`
style): every field is checked up front, before any model work, with an InvalidArgument that
names the field and the limit. Presets and defaults are resolved here, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from likeness.core.errors import InvalidArgument, check_range, require
from likeness.core.uris import validate_prefix
from likeness.diffusion.samplers import DEFAULT as DEFAULT_SAMPLER
from likeness.diffusion.samplers import SAMPLERS
from likeness.generation import presets

TASKS = ("text-to-image", "image-to-image", "inpaint")
PASTES = ("mask", "region")
MAX_ADAPTERS = 8
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class AdapterRef:
    uri: str
    scale: float


@dataclass(frozen=True)
class ControlRef:
    """One ControlNet conditioning: its image (HxWx3 uint8), model and schedule."""

    image: np.ndarray
    model: str
    scale: float | None = None
    start: float | None = None
    end: float | None = None


MAX_CONTROLS = 4
DEFAULT_CONTROL_SCALE = 1.0


@dataclass
class GenerationRequest:
    """Zero/None values take the quality mode's preset or the documented default."""

    model: str = ""
    task: str = "text-to-image"
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    count: int = 1
    steps: int = 0
    guidance_scale: float | None = None
    width: int = 0
    height: int = 0
    sampler: str = DEFAULT_SAMPLER
    quality_mode: str = presets.DEFAULT_MODE
    adapters: list[AdapterRef] = field(default_factory=list)
    init_image: np.ndarray | None = None  # HxWx3 uint8
    strength: float | None = None
    mask: np.ndarray | None = None  # HxW bool, True = repaint
    crop_padding: int = 0
    paste: str = "mask"  # inpaint: through the hard mask, or the whole region for the caller to blend
    controls: list[ControlRef] = field(default_factory=list)
    refiner: bool = False
    refiner_fraction: float | None = None
    reference_image: np.ndarray | None = None
    reference_scale: float | None = None
    noise_injection: float = 0.0
    return_inline: bool = False
    output_prefix: str = ""
    lcm_lora: str = ""  # resolved by validate(): the LCM-LoRA the FAST preset runs with, "" for none


@dataclass(frozen=True)
class Limits:
    max_size: int = 2048
    max_count: int = 16
    max_steps: int = 200


def validate(req: GenerationRequest, family: str, default_side: int, has_refiner: bool,
             limits: Limits, lcm_lora: str = "") -> tuple[GenerationRequest, list[str]]:
    """Checks every field and returns the request with presets and defaults resolved, plus
    warnings. `family` is `sdxl` or `sd15`; `default_side` the model's default image side;
    `lcm_lora` the LCM-LoRA registered for the model ("" for none), which FAST then runs with
    (LCM sampler, presets.LCM_STEPS steps, guidance presets.LCM_GUIDANCE) unless the request
    names another sampler."""
    warnings: list[str] = []
    require(req.task in TASKS, "task", f"unknown task {req.task!r}")
    require(req.quality_mode in presets.PRESETS, "quality_mode", f"unknown quality mode {req.quality_mode!r}")
    require(req.sampler in SAMPLERS or req.sampler == DEFAULT_SAMPLER, "sampler",
            f"unknown sampler {req.sampler!r}; known: {', '.join(SAMPLERS)}")
    preset = presets.PRESETS[req.quality_mode]
    use_lcm = _use_lcm(req, lcm_lora, warnings)
    check_range(req.seed, "seed", 0, MAX_SEED)
    check_range(req.count, "count", 1, limits.max_count)
    require(req.steps == 0 or 1 <= req.steps <= limits.max_steps, "steps",
            f"{req.steps} is outside [1, {limits.max_steps}] (0 takes the quality mode's preset)")
    steps = req.steps or (presets.LCM_STEPS if use_lcm else preset.steps)
    default_guidance = presets.LCM_GUIDANCE if use_lcm else presets.DEFAULT_GUIDANCE[family]
    guidance = default_guidance if req.guidance_scale is None else req.guidance_scale
    require(math.isfinite(guidance), "guidance_scale", "must be a finite number")
    check_range(guidance, "guidance_scale", 0.0, 30.0)
    check_range(req.noise_injection, "noise_injection", 0.0, 1.0)
    require(req.noise_injection == 0 or req.task == "text-to-image", "noise_injection",
            "only applies to TEXT_TO_IMAGE (image tasks start from the init image's latents)")
    width, height = _size(req, default_side, preset, limits)
    strength = _check_images(req, limits)
    refiner, fraction = _check_refiner(req, family, steps, preset, has_refiner, warnings)
    _check_adapters(req)
    reference_scale = presets.DEFAULT_REFERENCE_SCALE if req.reference_scale is None else req.reference_scale
    check_range(reference_scale, "reference_scale", 0.0, 1.0)
    controls = _controls(req, width, height)
    validate_prefix(req.output_prefix, "output_prefix")
    resolved = replace(req, steps=steps, guidance_scale=float(guidance), width=width, height=height,
                       sampler="lcm" if use_lcm else req.sampler, lcm_lora=lcm_lora if use_lcm else "",
                       strength=strength, refiner=refiner, refiner_fraction=fraction,
                       reference_scale=reference_scale, controls=controls,
                       output_prefix=req.output_prefix or "generated/")
    return resolved, warnings


def _use_lcm(req: GenerationRequest, lcm_lora: str, warnings: list[str]) -> bool:
    """Whether FAST runs with the model's LCM-LoRA: only with the default or the LCM sampler."""
    use_lcm = bool(lcm_lora) and req.quality_mode == presets.LCM_MODE and req.sampler in (DEFAULT_SAMPLER, "lcm")
    if lcm_lora and req.quality_mode == presets.LCM_MODE and not use_lcm:
        warnings.append(f"sampler {req.sampler} was requested: the LCM-LoRA {lcm_lora!r} is not used")
    return use_lcm


def _check_images(req: GenerationRequest, limits: Limits) -> float | None:
    """Init image and mask against the task; returns the strength (its default for image tasks)."""
    strength = req.strength
    if req.task == "text-to-image":
        require(req.init_image is None, "init_image", "is only used by IMAGE_TO_IMAGE and INPAINT")
        require(req.mask is None, "mask", "is only used by INPAINT")
    else:
        require(req.init_image is not None, "init_image", f"is required for task {req.task}")
        strength = presets.DEFAULT_STRENGTH[req.task] if strength is None else strength
        require(0.0 < strength <= 1.0, "strength", f"{strength} is outside (0, 1]")
        if req.task == "inpaint":
            require(req.mask is not None, "mask", "is required for INPAINT (white = repaint)")
            ih, iw = req.init_image.shape[:2]
            mh, mw = req.mask.shape[:2]
            require((mh, mw) == (ih, iw), "mask", f"is {mw}x{mh}, but init_image is {iw}x{ih}; they must match")
            require(bool(req.mask.any()), "mask", "has no white (repaint) pixels")
        else:
            require(req.mask is None, "mask", "is only used by INPAINT")
    check_range(req.crop_padding, "crop_padding", 0, limits.max_size)
    require(req.crop_padding == 0 or req.task == "inpaint", "crop_padding", "only applies to INPAINT")
    require(req.paste in PASTES, "paste", f"unknown paste mode {req.paste!r}")
    require(req.paste == "mask" or req.task == "inpaint", "paste", "PASTE_MODE_REGION only applies to INPAINT")
    return strength


def _check_refiner(req: GenerationRequest, family: str, steps: int, preset, has_refiner: bool,
                   warnings: list[str]) -> tuple[bool, float]:
    """(refiner pass on, fraction of steps it runs); a preset's refiner the model lacks is a warning."""
    refiner = req.refiner or preset.refiner
    fraction = presets.DEFAULT_REFINER_FRACTION if req.refiner_fraction is None else req.refiner_fraction
    require(0.0 < fraction < 1.0, "refiner_fraction", f"{fraction} is outside (0, 1)")
    if refiner and not has_refiner:
        if req.refiner:
            raise InvalidArgument("refiner", f"model {req.model!r} has no refiner model configured "
                                             "(model.yaml config `refiner`)")
        warnings.append(f"quality_mode {req.quality_mode}: model {req.model!r} has no refiner; refiner pass skipped")
        refiner = False
    if refiner:
        require(family == "sdxl", "refiner", "the refiner pass needs an SDXL model")
        require(int(steps * (1 - fraction)) >= 1 and int(round(steps * fraction)) >= 1, "refiner_fraction",
                f"{fraction} of {steps} steps leaves no step to the base or the refiner")
    return refiner, fraction


def _check_adapters(req: GenerationRequest) -> None:
    require(len(req.adapters) <= MAX_ADAPTERS, "adapters",
            f"{len(req.adapters)} adapters, over the limit of {MAX_ADAPTERS}")
    for i, a in enumerate(req.adapters):
        require(bool(a.uri), f"adapters[{i}].uri", "is empty; give the store URI of a .safetensors file")
        require(math.isfinite(a.scale), f"adapters[{i}].scale", "must be a finite number")
        check_range(a.scale, f"adapters[{i}].scale", -4.0, 4.0)
    uris = [a.uri for a in req.adapters]
    require(len(set(uris)) == len(uris), "adapters", "the same adapter URI is given twice")


def _controls(req: GenerationRequest, width: int, height: int) -> list[ControlRef]:
    """Each control checked and its defaults filled; the image must be the size it will be used at."""
    require(len(req.controls) <= MAX_CONTROLS, "controls", f"{len(req.controls)} controls, over the limit of "
                                                           f"{MAX_CONTROLS}")
    if req.task == "text-to-image":
        expected = (height, width)
        what = f"the output size {width}x{height}"
    else:
        expected = req.init_image.shape[:2]
        what = f"init_image's size {expected[1]}x{expected[0]}"
    out = []
    for i, c in enumerate(req.controls):
        field_name = f"controls[{i}]"
        require(bool(c.model), f"{field_name}.model", "is empty; name a ControlNet model of the repository")
        h, w = c.image.shape[:2]
        require((h, w) == tuple(expected), f"{field_name}.image", f"is {w}x{h}, but must be {what}")
        scale = DEFAULT_CONTROL_SCALE if c.scale is None else c.scale
        start = 0.0 if c.start is None else c.start
        end = 1.0 if c.end is None else c.end
        require(math.isfinite(scale), f"{field_name}.scale", "must be a finite number")
        check_range(scale, f"{field_name}.scale", 0.0, 2.0)
        require(0.0 <= start < 1.0, f"{field_name}.start", f"{start} is outside [0, 1)")
        require(start < end <= 1.0, f"{field_name}.end", f"{end} is outside ({start}, 1]")
        out.append(replace(c, scale=float(scale), start=float(start), end=float(end)))
    return out


def _size(req: GenerationRequest, default_side: int, preset, limits: Limits) -> tuple[int, int]:
    if req.init_image is not None and req.task != "text-to-image" and req.crop_padding == 0:
        # image tasks default to the init image's size, rounded down to a multiple of 8
        ih, iw = req.init_image.shape[:2]
        cap = limits.max_size // 8 * 8
        default_w, default_h = min(cap, max(64, iw // 8 * 8)), min(cap, max(64, ih // 8 * 8))
    else:
        default_w = default_h = presets.preset_size(default_side, preset)
    sizes = []
    for name, value, default in (("width", req.width, default_w), ("height", req.height, default_h)):
        value = value or default
        require(value % 8 == 0, name, f"{value} is not a multiple of 8")
        check_range(value, name, 64, limits.max_size, unit="px")
        sizes.append(value)
    return sizes[0], sizes[1]
