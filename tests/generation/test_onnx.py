"""ONNX Runtime engine vs torch on tiny-sdxl: same request, pixels within the stated tolerance;
export from float16/bfloat16 pipelines, external-data graphs, shape profiles and routing.

Tolerance (docs/api/generation.md): UNet noise prediction and text embeddings max abs diff <= 1e-4; final
8-bit pixels differ by at most 2 levels, on average by < 0.01 levels.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from likeness.generation.adapters import AdapterCache
from likeness.generation.engines import onnx_export
from likeness.generation.engines.base import BatchKey, ImageItem
from likeness.generation.engines.onnx_engine import OnnxEngine, _graphs_installed
from likeness.generation.engines.profiles import ShapeProfile, provider_options
from likeness.generation.engines.torch_engine import TorchEngine
from likeness.generation.models import LoadedModel


def engine_settings(cache, **overrides):
    values = dict(generation_device="cpu", generation_cpu_threads=1, generation_onnx_providers="CPUExecutionProvider",
                  generation_engine_cache_dir=str(cache), generation_dtype="float32")
    return SimpleNamespace(**{**values, **overrides})


def load_engines(repo, cache, **overrides):
    spec, folder = repo.spec("tiny-sdxl"), repo.fetch("tiny-sdxl")
    out = {}
    for cls in (TorchEngine, OnnxEngine):
        engine = cls(engine_settings(cache, **overrides))
        out[cls.name] = (engine, LoadedModel("tiny-sdxl", spec, engine.load_model(folder, spec), 0, AdapterCache(1)))
    return out


@pytest.fixture(scope="module")
def repo(service):
    thread, _, _ = service
    return thread.runtime.service.servicers[0][1]._generator.manager.repo


@pytest.fixture(scope="module")
def engine_cache(gen_root):
    """The session's engine cache (the onnxruntime service's too): tiny-sdxl is exported once."""
    return gen_root / "engine-cache"


@pytest.fixture(scope="module")
def engines(repo, engine_cache):
    return load_engines(repo, engine_cache)


def run_images(engine, model, key, seeds=(5, 6)):
    items = [ImageItem(seed=s, prompt="a face", negative_prompt="") for s in seeds]
    return np.stack([r.rgb for r in engine.run(model, None, key, items, {})]).astype(int)


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
    with torch.no_grad(), _graphs_installed(onnx_model.pipe):
        a = torch_model.pipe.unet(*args, added_cond_kwargs=added).sample
        b = onnx_model.pipe.unet(*args, added_cond_kwargs=added).sample
    assert (a - b).abs().max().item() <= 1e-4


def test_text_encoder_parity(engines):
    (_, torch_model), (_, onnx_model) = engines["torch"], engines["onnxruntime"]
    with _graphs_installed(onnx_model.pipe):
        for part in ("unet", "text_encoder", "text_encoder_2"):
            assert "forward" in vars(getattr(onnx_model.pipe, part))  # really runs the ONNX graph
        embeds = [m.pipe.encode_prompt(prompt=["a face", "two cats"], device="cpu", num_images_per_prompt=1,
                                       do_classifier_free_guidance=False) for m in (torch_model, onnx_model)]
    assert "forward" not in vars(onnx_model.pipe.unet)  # torch modules are back for adapter batches
    for a, b in zip(embeds[0], embeds[1], strict=True):
        if a is not None:
            assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-4


def test_engine_from_settings(tmp_path):
    from likeness.generation.engines import create_engine
    from tests.generation.conftest import make_settings

    assert create_engine(make_settings(tmp_path, generation_engine="onnxruntime")).name == "onnxruntime"
    assert create_engine(make_settings(tmp_path)).name == "torch"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_export_from_half_precision_pipeline(repo, tmp_path, engines, dtype):
    """A float16/bfloat16 pipeline exports (from a float32 CPU copy) and its graphs match float32
    torch; its images match the torch engine in the same dtype."""
    half = load_engines(repo, tmp_path, generation_dtype=dtype)
    (_, torch32), (_, onnx_half) = engines["torch"], half["onnxruntime"]
    assert onnx_half.pipe.unet.dtype == getattr(torch, dtype)  # the torch modules keep the configured dtype
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(2, 4, 8, 8, generator=g), torch.tensor(700.0), torch.randn(2, 77, 64, generator=g))
    added = {"text_embeds": torch.randn(2, 32, generator=g), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    with torch.no_grad(), _graphs_installed(onnx_half.pipe):
        graph = onnx_half.pipe.unet(*(a.to(getattr(torch, dtype)) if a.ndim else a for a in args),
                                    added_cond_kwargs={k: v.to(getattr(torch, dtype)) for k, v in added.items()})
        reference = torch32.pipe.unet(*args, added_cond_kwargs=added).sample
    assert graph.sample.dtype == getattr(torch, dtype)
    tolerance = 1e-2 if dtype == "float16" else 5e-2  # only the inputs and output are rounded to the dtype
    assert (graph.sample.float() - reference).abs().max().item() <= tolerance
    key = BatchKey("tiny-sdxl", "text-to-image", 64, 64, 3, "default", 5.0, None, "", 0.2, (), None)
    diff = np.abs(run_images(*half["torch"], key) - run_images(*half["onnxruntime"], key))
    # the graphs compute in float32; the difference is the torch engine's own rounding (bfloat16
    # keeps 8 mantissa bits, float16 11): measured max 6 / mean 0.55 levels (bf16), 1 / 0.02 (fp16)
    max_levels, mean_levels = (3, 0.1) if dtype == "float16" else (10, 1.0)
    assert diff.max() <= max_levels and diff.mean() < mean_levels, (diff.max(), diff.mean())


def test_float32_cpu_copy_reloads_only_when_needed(repo, engines):
    (_, torch32) = engines["torch"]
    folder = repo.fetch("tiny-sdxl")
    assert onnx_export.float32_cpu_copy(torch32.pipe, folder, "sdxl") is torch32.pipe
    for dtype, device in ((torch.float16, "cpu"), (torch.float32, "cuda")):  # a CUDA pipeline: same branch
        pipe = SimpleNamespace(unet=SimpleNamespace(dtype=dtype, device=torch.device(device)))
        copy = onnx_export.float32_cpu_copy(pipe, folder, "sdxl")
        assert copy.unet.dtype == torch.float32 and copy.unet.device.type == "cpu"


def test_external_data_format_over_threshold(engines, tmp_path, monkeypatch):
    """Graphs over the threshold (2 GB for real) are written as <name>.onnx + <name>.onnx.data."""
    import onnxruntime as ort

    (_, torch32) = engines["torch"]
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 1024)
    path = onnx_export.export_vae_decoder(torch32.pipe.vae, tmp_path / "vae_decoder.onnx", 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae_decoder.onnx", "vae_decoder.onnx.data"]
    assert path.stat().st_size < 100_000 < (tmp_path / "vae_decoder.onnx.data").stat().st_size  # weights outside
    latents = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"latents": latents})[0]
    with torch.no_grad():
        ref = torch32.pipe.vae.decode(torch.from_numpy(latents)).sample.numpy()
    assert np.abs(out - ref).max() <= 1e-4


def test_shape_profile_and_trt_options(tmp_path):
    profile = ShapeProfile.for_model(1024, 4)
    assert (profile.min_side, profile.opt_side, profile.max_side) == (1024, 1024, 1280)  # presets: 1x .. 1.25x
    assert profile.covers(1280, 1024, 4) and not profile.covers(1344, 1024, 1) and not profile.covers(1024, 1024, 5)
    dims = {"in_channels": 4, "cross_attention_dim": 2048, "text_embeds": 1280, "time_ids": 6}
    options = provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider"], profile, "unet", dims, tmp_path)
    trt, cuda = options
    assert cuda == "CUDAExecutionProvider" and trt[0] == "TensorrtExecutionProvider"
    assert trt[1]["trt_profile_min_shapes"] == ("sample:1x4x128x128,encoder_hidden_states:1x77x2048,"
                                                "text_embeds:1x1280,time_ids:1x6")
    assert trt[1]["trt_profile_opt_shapes"].startswith("sample:2x4x128x128,")
    assert trt[1]["trt_profile_max_shapes"].startswith("sample:8x4x160x160,encoder_hidden_states:8x77x2048")
    assert profile.shapes("vae_decoder", {"latent_channels": 4})["max"] == "latents:1x4x160x160"
    assert profile.shapes("text_encoder", {})["max"] == "input_ids:4x77"
    # the engine cache is keyed by the profile: other sizes or batch limits never reuse an engine
    other = ShapeProfile.for_model(1024, 4, min_size=768, max_size=1536)
    paths = {p[1]["trt_engine_cache_path"] for p in
             (provider_options(["TensorrtExecutionProvider"], x, "unet", dims, tmp_path)[0] for x in (profile, other))}
    assert len(paths) == 2
    assert ShapeProfile.for_model(64, 2, model_max=72).max_side == 72


def test_batch_outside_profile_is_served_by_torch(repo, engine_cache, engines):
    engine = OnnxEngine(engine_settings(engine_cache, generation_profile_routing="always", generation_max_batch=2))
    spec = repo.spec("tiny-sdxl")
    model = LoadedModel("tiny-sdxl", spec, engine.load_model(repo.fetch("tiny-sdxl"), spec), 0, AdapterCache(1))
    assert engine.enforce_profiles and model.pipe._likeness_graphs["profile"].max_side == 80
    inside = BatchKey("tiny-sdxl", "text-to-image", 64, 64, 2, "euler", 5.0, None, "", 0.2, (), None)
    outside = BatchKey("tiny-sdxl", "text-to-image", 96, 64, 2, "euler", 5.0, None, "", 0.2, (), None)
    run_images(engine, model, inside)
    assert engine.batches == {"onnx": 1}
    images = run_images(engine, model, outside)
    assert engine.batches == {"onnx": 1, "torch:outside_profile": 1}
    assert np.array_equal(images, run_images(*engines["torch"], outside))  # exactly the torch engine's result
    run_images(engine, model, inside, seeds=(1, 2, 3))  # three images: over max_batch 2
    assert engine.batches["torch:outside_profile"] == 2


def test_adapter_batches_run_on_the_torch_modules(engines):
    """LoRA batches are the torch engine's (the graphs hold base weights); the next plain batch is
    back on the graphs."""
    engine, model = engines["onnxruntime"]
    before = dict(engine.batches)
    key = BatchKey("tiny-sdxl", "text-to-image", 64, 64, 1, "default", 5.0, None, "", 0.2, (("lora_x", 1.0),), None)
    with pytest.raises(Exception, match="lora_x is not available"):  # the torch path ran: it looks up the file
        engine.run(model, None, key, [ImageItem(seed=1, prompt="", negative_prompt="")], {})
    assert engine.batches["torch:adapters"] == before.get("torch:adapters", 0) + 1
    assert "forward" not in vars(model.pipe.unet)


def test_graph_folder_names_model_digest_and_exporter_version(tmp_path, monkeypatch):
    """Graphs an older exporter wrote (other code, torch, diffusers or transformers) are never reused."""
    engine = OnnxEngine(engine_settings(tmp_path))
    spec = SimpleNamespace(name="sdxl-base", digest="ab" * 32)
    folder = engine.graph_folder(spec)
    version = onnx_export.exporter_version()
    assert folder == tmp_path / f"sdxl-base-{'ab' * 8}-x{version}" and len(version) == 12
    monkeypatch.setattr(onnx_export, "exporter_version", lambda: "0" * 12)
    assert engine.graph_folder(spec) != folder


def test_folder_lock_excludes_another_holder(tmp_path):
    """flock conflicts between open files, so a thread stands in for a second process here."""
    import threading

    order, held = [], threading.Event()

    def first():
        with onnx_export.folder_lock(tmp_path / "m"):
            held.set()
            threading.Event().wait(0.2)
            order.append("first released")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    with onnx_export.folder_lock(tmp_path / "m"):
        order.append("second acquired")
    thread.join()
    assert order == ["first released", "second acquired"]
