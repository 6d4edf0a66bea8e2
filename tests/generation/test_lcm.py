"""The LCM fast path: the `lcm` sampler, and FAST running in LCM steps with the LCM-LoRA registered
for the model (tiny-lcm-lora-sdxl: a random-weight stand-in in the LCM-LoRA layout)."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.api.v1 import generation_pb2 as G
from likeness.core.images import decode_image
from likeness.generation import presets
from likeness.generation.request import GenerationRequest, Limits, validate

LIMITS = Limits(max_size=512, max_count=16, max_steps=200)


def check(lcm_lora="lcm", **fields):
    return validate(GenerationRequest(model="m", **fields), "sdxl", 64, True, LIMITS, lcm_lora=lcm_lora)


def test_fast_resolves_to_lcm_steps_sampler_and_guidance_when_an_lcm_lora_is_registered():
    req, warnings = check(quality_mode="fast")
    assert (req.steps, req.sampler, req.guidance_scale, req.lcm_lora) == (presets.LCM_STEPS, "lcm", 1.0, "lcm")
    assert 4 <= presets.LCM_STEPS <= 8 and warnings == []
    req, _ = check(quality_mode="fast", steps=4, guidance_scale=1.5)  # explicit fields still win
    assert (req.steps, req.guidance_scale, req.lcm_lora) == (4, 1.5, "lcm")
    req, _ = check(quality_mode="standard")  # only FAST takes the LCM path
    assert (req.steps, req.sampler, req.lcm_lora) == (30, "default", "")
    req, _ = check(quality_mode="fast", lcm_lora="")  # no LCM-LoRA: the ordinary FAST preset
    assert (req.steps, req.sampler, req.lcm_lora) == (15, "default", "")


def test_another_sampler_keeps_fast_off_the_lcm_lora_and_says_so():
    req, warnings = check(quality_mode="fast", sampler="euler")
    assert (req.steps, req.sampler, req.lcm_lora) == (15, "euler", "")
    assert "LCM-LoRA 'lcm' is not used" in warnings[0]


def _generate(stub, prefix, **fields):
    resp = stub.Generate(G.GenerateRequest(model="tiny-sdxl", prompt="p", seed=5, width=64, height=64,
                                           return_inline=True, output_prefix=prefix, **fields))
    return resp, decode_image(resp.images[0].artifact.data, "image")


@pytest.mark.slow
def test_fast_runs_with_the_registered_lcm_lora_and_says_which(service, gen_root):
    import shutil

    from likeness.diffusion.lcm import TINY_NAME, ensure_tiny_lcm_lora

    thread, stub, _ = service
    generator = thread.runtime.service.servicers[0][1]._generator
    before, _ = _generate(stub, "lcm/before/", quality_mode=G.QUALITY_MODE_FAST, steps=2)
    assert before.lcm_lora == ""
    ensure_tiny_lcm_lora(generator.manager.repo)
    try:
        steps = []
        resp, fast = _generate(stub, "lcm/fast/", quality_mode=G.QUALITY_MODE_FAST)
        # the same LCM sampling without the LoRA: the adapter is what differs
        _, no_lora = _generate(stub, "lcm/nolora/", sampler=G.SAMPLER_LCM, steps=presets.LCM_STEPS,
                               guidance_scale=presets.LCM_GUIDANCE)
        stream = stub.GenerateStream(G.GenerateStreamRequest(request=G.GenerateRequest(
            model="tiny-sdxl", prompt="p", seed=6, width=64, height=64, quality_mode=G.QUALITY_MODE_FAST,
            output_prefix="lcm/stream/")))
        for event in stream:
            if event.HasField("progress") and event.progress.stage == "denoise":
                steps.append((event.progress.done, event.progress.total))
    finally:  # the session's other tests see tiny-sdxl without an LCM-LoRA again
        shutil.rmtree(gen_root / "models" / TINY_NAME)
    assert resp.lcm_lora == TINY_NAME
    assert steps and steps[-1] == (presets.LCM_STEPS, presets.LCM_STEPS)
    assert not np.array_equal(fast, no_lora)
    parameters = _png_parameters(resp.images[0].artifact.data)
    assert "Sampler: LCM" in parameters and f"LCM-LoRA: {TINY_NAME}" in parameters
    assert f"Steps: {presets.LCM_STEPS}" in parameters


def _png_parameters(data: bytes) -> str:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).info["parameters"]
