"""Validation up front: each bad field is an InvalidArgument naming the field and the limit."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.core.errors import InvalidArgument
from likeness.generation.request import AdapterRef, GenerationRequest, Limits, validate

LIMITS = Limits(max_size=512, max_count=16, max_steps=200)
IMG = np.zeros((72, 96, 3), np.uint8)
MASK = np.zeros((72, 96), bool)
MASK[10:20, 10:20] = True


def check(**fields):
    return validate(GenerationRequest(model="m", **fields), "sdxl", 64, has_refiner=True, limits=LIMITS)


def test_defaults_and_presets():
    req, warnings = check()
    assert (req.steps, req.guidance_scale, req.width, req.height, req.refiner) == (30, 5.0, 64, 64, False)
    assert warnings == [] and req.output_prefix == "generated/"
    req, _ = check(quality_mode="ultra")
    assert (req.steps, req.width, req.refiner, req.refiner_fraction) == (60, 80, True, 0.2)
    req, _ = check(quality_mode="fast", steps=3, width=128)
    assert (req.steps, req.width, req.height) == (3, 128, 64)  # explicit fields override the preset
    req, _ = check(task="image-to-image", init_image=IMG)
    assert (req.width, req.height, req.strength) == (96, 72, 0.75)  # the init image's size
    req, _ = check(task="inpaint", init_image=IMG, mask=MASK)
    assert req.strength == 0.99


def test_quality_mode_without_refiner_warns():
    req, warnings = validate(GenerationRequest(model="m", quality_mode="quality"), "sdxl", 64, False, LIMITS)
    assert not req.refiner and "no refiner" in warnings[0]


@pytest.mark.parametrize("fields, field, words", [
    ({"steps": 201}, "steps", "[1, 200]"),
    ({"steps": -1}, "steps", "[1, 200]"),
    ({"guidance_scale": -0.5}, "guidance_scale", "[0.0, 30.0]"),
    ({"guidance_scale": float("nan")}, "guidance_scale", "finite"),
    ({"width": 65}, "width", "multiple of 8"),
    ({"height": 1024}, "height", "[64, 512]"),
    ({"width": 32}, "width", "[64, 512]"),
    ({"count": 0}, "count", "[1, 16]"),
    ({"count": 17}, "count", "[1, 16]"),
    ({"seed": -1}, "seed", "outside"),
    ({"sampler": "heun"}, "sampler", "unknown sampler"),
    ({"quality_mode": "max"}, "quality_mode", "unknown"),
    ({"task": "image-to-image"}, "init_image", "required"),
    ({"task": "inpaint", "init_image": IMG}, "mask", "required"),
    ({"task": "inpaint", "init_image": IMG, "mask": np.ones((64, 64), bool)}, "mask", "96x72"),
    ({"task": "inpaint", "init_image": IMG, "mask": np.zeros((72, 96), bool)}, "mask", "no white"),
    ({"task": "image-to-image", "init_image": IMG, "strength": 0.0}, "strength", "(0, 1]"),
    ({"noise_injection": 1.5}, "noise_injection", "[0.0, 1.0]"),
    ({"task": "image-to-image", "init_image": IMG, "noise_injection": 0.2}, "noise_injection", "TEXT_TO_IMAGE"),
    ({"crop_padding": 8}, "crop_padding", "INPAINT"),
    ({"refiner": True, "refiner_fraction": 1.0}, "refiner_fraction", "(0, 1)"),
    ({"refiner": True, "steps": 1}, "refiner_fraction", "no step"),
    ({"adapters": [AdapterRef("s3://b/a", 5.0)]}, "adapters[0].scale", "[-4.0, 4.0]"),
    ({"adapters": [AdapterRef("", 1.0)]}, "adapters[0].uri", "empty"),
    ({"adapters": [AdapterRef(f"s3://b/{i}", 1.0) for i in range(9)]}, "adapters", "limit of 8"),
    ({"reference_scale": 2.0}, "reference_scale", "[0.0, 1.0]"),
    ({"output_prefix": "../x/"}, "output_prefix", "traversal"),
])
def test_bad_fields(fields, field, words):
    with pytest.raises(InvalidArgument) as err:
        check(**fields)
    assert err.value.field == field and words in err.value.message


def test_refiner_requested_without_refiner_model():
    with pytest.raises(InvalidArgument, match="refiner: model 'm' has no refiner"):
        validate(GenerationRequest(model="m", refiner=True), "sdxl", 64, False, LIMITS)
