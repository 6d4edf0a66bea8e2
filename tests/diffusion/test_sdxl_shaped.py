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
