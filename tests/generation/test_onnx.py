"""ONNX Runtime engine vs torch on tiny-sdxl: same request, pixels within the stated tolerance.

Tolerance (docs/api/generation.md): UNet noise prediction and text embeddings max abs diff <= 1e-4; final
8-bit pixels differ by at most 2 levels, on average by < 0.01 levels.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from likeness.core.errors import FailedPrecondition
from likeness.generation.adapters import AdapterCache
from likeness.generation.engines.base import BatchKey, ImageItem
from likeness.generation.engines.onnx_engine import OnnxEngine
from likeness.generation.engines.torch_engine import TorchEngine
from likeness.generation.models import LoadedModel


@pytest.fixture(scope="module")
def engines(service, tmp_path_factory):
    thread, _, _ = service
    repo = thread.runtime.service.servicers[0][1]._generator.manager.repo
    spec, folder = repo.spec("tiny-sdxl"), repo.fetch("tiny-sdxl")
    settings = SimpleNamespace(generation_device="cpu", generation_cpu_threads=1,
                               generation_onnx_providers="CPUExecutionProvider",
                               generation_engine_cache_dir=str(tmp_path_factory.mktemp("engine-cache")))
    out = {}
    for cls in (TorchEngine, OnnxEngine):
        engine = cls(settings)
        out[cls.name] = (engine, LoadedModel("tiny-sdxl", spec, engine.load_model(folder, spec), 0, AdapterCache(1)))
    return out


@pytest.mark.parametrize("sampler", ["default", "euler_ancestral"])
def test_onnx_matches_torch(engines, sampler):
    key = BatchKey("tiny-sdxl", "text-to-image", 64, 64, 3, sampler, 5.0, None, "", 0.2, (), None)
    images = {}
    for name, (engine, model) in engines.items():
        items = [ImageItem(seed=s, prompt="a face", negative_prompt="") for s in (5, 6)]
        images[name] = np.stack([r.rgb for r in engine.run(model, None, key, items, {})]).astype(int)
    diff = np.abs(images["torch"] - images["onnxruntime"])
    assert diff.max() <= 2 and diff.mean() < 0.01, (diff.max(), diff.mean())


def test_unet_step_parity(engines):
    (_, torch_model), (_, onnx_model) = engines["torch"], engines["onnxruntime"]
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 4, 8, 8, generator=g), torch.tensor(500.0), torch.randn(2, 77, 64, generator=g))
    added = {"text_embeds": torch.randn(2, 32, generator=g), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    with torch.no_grad():
        a = torch_model.pipe.unet(*args, added_cond_kwargs=added).sample
        b = onnx_model.pipe.unet(*args, added_cond_kwargs=added).sample
    assert (a - b).abs().max().item() <= 1e-4


def test_text_encoder_parity(engines):
    (_, torch_model), (_, onnx_model) = engines["torch"], engines["onnxruntime"]
    for part in ("unet", "text_encoder", "text_encoder_2"):
        assert "forward" in vars(getattr(onnx_model.pipe, part))  # really runs the ONNX graph
    embeds = [m.pipe.encode_prompt(prompt=["a face", "two cats"], device="cpu", num_images_per_prompt=1,
                                   do_classifier_free_guidance=False) for m in (torch_model, onnx_model)]
    for a, b in zip(embeds[0], embeds[1], strict=True):
        if a is not None:
            assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-4


def test_engine_from_settings(tmp_path):
    from likeness.generation.engines import create_engine
    from tests.generation.conftest import make_settings

    assert create_engine(make_settings(tmp_path, generation_engine="onnxruntime")).name == "onnxruntime"
    assert create_engine(make_settings(tmp_path)).name == "torch"


def test_onnx_refuses_adapters(engines):
    engine, model = engines["onnxruntime"]
    key = BatchKey("tiny-sdxl", "text-to-image", 64, 64, 1, "default", 5.0, None, "", 0.2, (("lora_x", 1.0),), None)
    with pytest.raises(FailedPrecondition, match="LIKENESS_GENERATION_ENGINE=torch"):
        engine.run(model, None, key, [ImageItem(seed=1, prompt="", negative_prompt="")], {})
