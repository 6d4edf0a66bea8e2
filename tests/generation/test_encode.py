"""Prompt encoding of the torch engine: an empty negative prompt on a model that zeroes it
(SDXL's force_zeros_for_empty_prompt) is not run through the text encoders, as in a bare diffusers
call, and gives the same embeddings as encoding "" and zeroing it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from likeness.generation.engines.base import ImageItem
from likeness.generation.engines.torch_engine import TorchEngine


@pytest.fixture(scope="module")
def pipe(service):
    thread, _, _ = service
    folder = thread.runtime.service.servicers[0][1]._generator.manager.repo.fetch("tiny-sdxl")
    engine = TorchEngine(SimpleNamespace(generation_device="cpu", generation_cpu_threads=1, generation_dtype="auto"))
    return engine, engine.load_model(folder, SimpleNamespace(kind="sdxl"))


def _encode_counting(engine, pipe, items):
    calls = []
    hooks = [enc.register_forward_hook(lambda *_: calls.append(1)) for enc in (pipe.text_encoder, pipe.text_encoder_2)]
    try:
        with torch.inference_mode():
            return engine.encode(pipe, "sdxl", items, cfg=True), len(calls)
    finally:
        for hook in hooks:
            hook.remove()


def test_empty_negatives_are_not_encoded_and_match_encoding_then_zeroing(pipe):
    engine, pipe = pipe
    assert pipe.config.force_zeros_for_empty_prompt
    items = [ImageItem(seed=0, prompt="a portrait", negative_prompt=""),
             ImageItem(seed=1, prompt="a face", negative_prompt="")]
    out, calls = _encode_counting(engine, pipe, items)
    assert calls == 2  # each text encoder once, for the prompts only
    with torch.inference_mode():
        pe, npe, ppe, nppe = pipe.encode_prompt(prompt=["a portrait", "a face"], device="cpu", num_images_per_prompt=1,
                                                do_classifier_free_guidance=True, negative_prompt=["", ""])
    assert torch.equal(out["prompt_embeds"], pe) and torch.equal(out["pooled_prompt_embeds"], ppe)
    assert out["negative_prompt_embeds"].shape == npe.shape and not out["negative_prompt_embeds"].any()
    assert out["negative_pooled_prompt_embeds"].shape == nppe.shape and not out["negative_pooled_prompt_embeds"].any()


def test_a_batch_with_one_negative_prompt_encodes_it_and_zeroes_only_the_empty_rows(pipe):
    engine, pipe = pipe
    items = [ImageItem(seed=0, prompt="a portrait", negative_prompt=""),
             ImageItem(seed=1, prompt="a face", negative_prompt="blurry")]
    out, calls = _encode_counting(engine, pipe, items)
    assert calls == 4  # prompts and negatives, each through both encoders
    assert not out["negative_prompt_embeds"][0].any() and out["negative_prompt_embeds"][1].abs().sum() > 0
    assert not out["negative_pooled_prompt_embeds"][0].any()
