"""Generation in float16/bfloat16 on this CPU: the dtype and device settings, and VAE decoding that
upcasts like diffusers (`force_upcast`) so a float16 VAE that overflows still decodes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from likeness.core.errors import FailedPrecondition
from likeness.generation.engines.torch_engine import TorchEngine


def _engine(dtype: str, device: str = "cpu") -> TorchEngine:
    return TorchEngine(SimpleNamespace(generation_device=device, generation_cpu_threads=1, generation_dtype=dtype))


@pytest.fixture(scope="module")
def folder(service):
    thread, _, _ = service
    return thread.runtime.service.servicers[0][1]._generator.manager.repo.fetch("tiny-sdxl")


@pytest.mark.parametrize(("name", "expected"), [("auto", torch.float32), ("float16", torch.float16),
                                                ("bfloat16", torch.bfloat16)])
def test_dtype_setting_reaches_every_module(folder, name, expected):
    engine = _engine(name)
    pipe = engine.load_model(folder, SimpleNamespace(kind="sdxl"))
    assert engine.describe()["dtype"] == str(expected).removeprefix("torch.")
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert getattr(pipe, part).dtype == expected, part


def test_a_missing_gpu_fails_at_start_naming_the_setting():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(FailedPrecondition, match="LIKENESS_GENERATION_DEVICE.*cuda:0 is not available"):
        _engine("auto", "cuda:0")


def test_float16_vae_decode_upcasts_like_diffusers(folder):
    """A float16 VAE whose first decoder layer overflows float16 (as the stock SDXL VAE does deep
    inside) decodes to NaN without the upcast; with `force_upcast` it decodes as in float32."""
    engine = _engine("float16")
    pipe = engine.load_model(folder, SimpleNamespace(kind="sdxl"))
    vae = pipe.vae
    assert vae.config.force_upcast
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(1e5)  # activations ~1e5 > 65504 (float16 max); weights still fit
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = vae.decode((latents / vae.config.scaling_factor).half()).sample
        assert torch.isnan(raw).any()  # the overflow is real: without the upcast the image is NaN
        upcast = engine.decode(pipe, latents)
        assert vae.dtype == torch.float16  # back to float16 after the decode
        reference = vae.to(torch.float32).decode(latents / vae.config.scaling_factor).sample
        vae.to(torch.float16)
    expected = (pipe.image_processor.postprocess(reference, output_type="np")[0] * 255).round()
    assert np.abs(upcast.astype(int) - expected.astype(int)).max() <= 1
    assert upcast.std() > 1  # an image, not a constant (NaN decodes to all-black)
    vae.register_to_config(force_upcast=False)  # a VAE that asks for no upcast is decoded as is
    try:
        with np.errstate(invalid="ignore"), torch.no_grad():
            assert engine.decode(pipe, latents).max() == 0
    finally:
        vae.register_to_config(force_upcast=True)


def test_derived_pipelines_keep_the_models_dtype(folder):
    """diffusers' from_pipe casts the components it shares to float32 unless told the dtype: the
    first image-to-image, inpaint or ControlNet request on a bf16/fp16 model would turn the loaded
    model (and its ControlNet) into float32, doubling its memory and changing every later image."""
    from likeness.diffusion.controlnet import build_tiny_controlnet, derive_control_pipeline
    from likeness.diffusion.pipelines import derive_pipeline

    pipe = _engine("bfloat16").load_model(folder, SimpleNamespace(kind="sdxl"))
    net = build_tiny_controlnet(pipe.unet, 0).to(torch.bfloat16)
    derived = [derive_pipeline(pipe, "sdxl", task) for task in ("image-to-image", "inpaint")]
    derived.append(derive_control_pipeline(pipe, "sdxl", "text-to-image", [net]))
    assert derived[2].controlnet.dtype == torch.bfloat16
    for p in (pipe, *derived):
        for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
            assert getattr(p, part).dtype == torch.bfloat16, (type(p).__name__, part)
