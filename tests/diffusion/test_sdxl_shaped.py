"""sdxl-shaped: the released SDXL component configurations, checked by parameter count on the meta
device (no memory, no weights: a full build is ~7 GB and belongs to bench/generation.py)."""

from __future__ import annotations

import pytest
import torch

from likeness.diffusion import sdxl_shaped


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.slow
def test_components_have_the_released_sdxl_sizes():
    with torch.device("meta"):
        assert _params(sdxl_shaped.unet("sdxl")) == 2_567_463_684  # SDXL base UNet
        assert _params(sdxl_shaped.unet("sdxl-refiner")) == pytest.approx(2.26e9, rel=0.01)
        assert _params(sdxl_shaped.vae()) == 83_653_863
        assert _params(sdxl_shaped.text_encoder(False)) == 123_060_480  # CLIP ViT-L/14 text
        assert _params(sdxl_shaped.text_encoder(True)) == 694_659_840  # OpenCLIP bigG/14 text + projection


def test_model_config_labels_the_stand_in():
    config = sdxl_shaped.model_config("sdxl", "bfloat16")
    assert config["random_weights"] is True and "random weights" in config["note"]
    assert config["default_size"] == 1024 and config["refiner"] == "sdxl-shaped-refiner"
    with pytest.raises(ValueError, match="unknown sdxl-shaped model"):
        sdxl_shaped.ensure_sdxl_shaped_model(None, "sdxl-huge")


def test_controlnet_is_built_in_the_unets_dtype_registered_once_and_labelled(tmp_path, tiny_folders, monkeypatch):
    """The full-size builder, run on tiny-sdxl's UNet cast to bf16: no float32 copy is made (the
    saved weights are bf16), the model is a registered, labelled stand-in, and a second call reuses it."""
    from diffusers import UNet2DConditionModel
    from safetensors import safe_open

    from likeness.core.modelrepo import ModelRepository
    from likeness.diffusion import controlnet

    unet = UNet2DConditionModel.from_pretrained(str(tiny_folders["sdxl"] / "unet"), torch_dtype=torch.bfloat16)
    repo = ModelRepository(tmp_path / "models", tmp_path / "cache")
    folder = sdxl_shaped.ensure_sdxl_shaped_controlnet(repo, unet, "shaped-cn")
    spec = repo.spec("shaped-cn")
    assert spec.kind == "controlnet" and spec.config["family"] == "sdxl" and spec.config["random_weights"] is True
    assert spec.config["weights_dtype"] == "bfloat16"
    with safe_open(str(folder / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    monkeypatch.setattr(controlnet, "build_tiny_controlnet", lambda *a: pytest.fail("rebuilt a registered model"))
    assert sdxl_shaped.ensure_sdxl_shaped_controlnet(repo, unet, "shaped-cn") == folder
