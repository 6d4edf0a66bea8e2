"""tiny-sdxl: built deterministically, loads through from_pretrained, runs every task; real CLIP ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from likeness.core.errors import InvalidArgument, ModelMissing
from likeness.diffusion.pipelines import derive_pipeline, load_pipeline
from likeness.diffusion.tiny_sdxl import build_tiny_model
from likeness.diffusion.tokenizer import load_clip_tokenizer, write_clip_tokenizer


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.safetensors")):
        h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_offline_tokenizer_matches_openai_clip_ids(tmp_path):
    tok = load_clip_tokenizer(write_clip_tokenizer(tmp_path / "tok"))
    # ids of OpenAI CLIP ViT-L/14's tokenizer for this phrase
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77


def test_build_is_deterministic(tmp_path, tiny_folders):
    again = build_tiny_model("sdxl", tmp_path / "again")
    assert _digest(again) == _digest(tiny_folders["sdxl"])


def test_tasks_share_components_and_run(sdxl_pipe):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    from PIL import Image

    for task, extra in [("text-to-image", {}),
                        ("image-to-image", {"image": Image.fromarray(image), "strength": 0.5}),
                        ("inpaint", {"image": Image.fromarray(image), "mask_image": Image.fromarray(mask),
                                     "strength": 0.99})]:
        pipe = derive_pipeline(sdxl_pipe, "sdxl", task)
        assert pipe.unet is sdxl_pipe.unet  # no second copy of the weights
        out = pipe("a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                   generator=torch.Generator().manual_seed(1), **extra).images
        assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_refiner_and_sd15_load(tiny_folders):
    refiner = load_pipeline(tiny_folders["sdxl-refiner"], "sdxl-refiner", "image-to-image")
    assert refiner.config.requires_aesthetics_score
    image = np.full((1, 64, 64, 3), 0.5, np.float32)
    assert refiner("x", image=image, strength=0.5, num_inference_steps=2,
                   output_type="np").images.shape == (1, 64, 64, 3)
    sd15 = load_pipeline(tiny_folders["sd15"], "sd15")
    assert sd15("x", num_inference_steps=1, height=64, width=64, output_type="np").images.shape == (1, 64, 64, 3)


def test_clear_errors(tmp_path, tiny_folders):
    with pytest.raises(ModelMissing, match="model_index.json"):
        load_pipeline(tmp_path, "sdxl")
    with pytest.raises(InvalidArgument, match="refiner"):
        load_pipeline(tiny_folders["sdxl-refiner"], "sdxl-refiner", "text-to-image")


@pytest.mark.parametrize("sampler", ["default", "ddim", "pndm", "dpm_solver_multistep", "euler", "euler_ancestral",
                                     "lcm"])
def test_every_sampler_runs_without_reloading(sdxl_pipe, sampler):
    from likeness.diffusion.samplers import make_scheduler

    unet = sdxl_pipe.unet
    sdxl_pipe.scheduler = make_scheduler(sampler, sdxl_pipe.scheduler.config)
    out = sdxl_pipe("x", num_inference_steps=3, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images
    assert sdxl_pipe.unet is unet and np.isfinite(out).all()


def test_ensure_tiny_model_registers_once(tmp_path, monkeypatch):
    from likeness.core.modelrepo import ModelRepository
    from likeness.diffusion import tiny_sdxl

    repo = ModelRepository(tmp_path / "models", tmp_path / "cache")
    folder = tiny_sdxl.ensure_tiny_model(repo, "tiny-sdxl")
    spec = repo.spec("tiny-sdxl")
    assert (spec.kind, spec.backend) == ("sdxl", "diffusers")
    assert spec.config["random_weights"] is True and spec.config["refiner"] == "tiny-sdxl-refiner"
    assert (folder / "model_index.json").is_file()

    def no_rebuild(*a, **k):
        raise AssertionError("rebuilt a registered model")

    monkeypatch.setattr(tiny_sdxl, "build_tiny_model", no_rebuild)
    assert tiny_sdxl.ensure_tiny_model(repo, "tiny-sdxl") == folder
    assert repo.spec("tiny-sdxl").digest == spec.digest


def test_refiner_shares_vae_and_second_text_encoder_with_base(tiny_folders):
    for part in ("vae", "text_encoder_2"):
        base = (tiny_folders["sdxl"] / part / "model.safetensors")
        ref = (tiny_folders["sdxl-refiner"] / part / "model.safetensors")
        if not base.exists():
            base = next((tiny_folders["sdxl"] / part).glob("*.safetensors"))
            ref = next((tiny_folders["sdxl-refiner"] / part).glob("*.safetensors"))
        assert base.read_bytes() == ref.read_bytes(), part


def test_tiny_ip_adapter_loads_and_conditions(tmp_path, sdxl_pipe):
    from PIL import Image

    folder = build_tiny_model("ip-adapter", tmp_path / "ipa")

    def run(**kw):
        return sdxl_pipe("a", num_inference_steps=2, height=64, width=64, output_type="np",
                         generator=torch.Generator().manual_seed(1), **kw).images

    base = run()
    sdxl_pipe.load_ip_adapter(str(folder), subfolder="", weight_name="ip-adapter.safetensors",
                              image_encoder_folder="image_encoder")
    try:
        sdxl_pipe.set_ip_adapter_scale(0.6)
        ref = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        assert np.abs(run(ip_adapter_image=[[ref]]) - base).max() > 1e-3
    finally:
        sdxl_pipe.unload_ip_adapter()
    assert np.array_equal(run(), base)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_loaded_weights_are_in_process_memory_not_mapped_from_the_files(tiny_folders):
    """A float32 folder loaded as float32 needs no conversion, so from_pretrained would leave its
    tensors as views of the safetensors mappings (read lazily, droppable under memory pressure)."""
    folder = tiny_folders["sdxl"]
    pipe = load_pipeline(folder, "sdxl")
    mapped = [line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
              if line.endswith(".safetensors") and str(folder) in line]
    assert mapped == [], mapped
    assert pipe.unet.dtype == torch.float32
