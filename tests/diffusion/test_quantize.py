"""Weight-only int8 UNet (torchao) on tiny-sdxl: the weights shrink, the output stays close."""

from __future__ import annotations

import numpy as np
import torch


def test_int8_weight_only_unet_shrinks_linear_weights_and_keeps_the_output_close(sdxl_pipe):
    from diffusers import UNet2DConditionModel

    from likeness.diffusion.quantize import quantize_unet_int8, unet_weight_bytes

    unet = UNet2DConditionModel.from_config(sdxl_pipe.unet.config).eval()
    unet.load_state_dict(sdxl_pipe.unet.state_dict())
    linear = sum(m.weight.numel() for m in unet.modules() if isinstance(m, torch.nn.Linear))
    before = unet_weight_bytes(unet)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=gen)
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen)
    added = {"text_embeds": torch.randn(1, 32, generator=gen), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    with torch.inference_mode():
        expected = unet(sample, 10, text, added_cond_kwargs=added).sample
        quantize_unet_int8(unet)
        got = unet(sample, 10, text, added_cond_kwargs=added).sample
    after = unet_weight_bytes(unet)
    # fp32 linear weights (4 bytes) become int8 (1 byte) plus one scale per output channel
    assert before - after >= 0.7 * 3 * linear
    rel = float((got - expected).norm() / expected.norm())
    assert 0 < rel < 0.05 and np.isfinite(got.numpy()).all()
