"""LoRA files: diffusers and kohya formats reproduce the trained adapter; scale 0 and removal give
back the base output bit for bit; corrupt or foreign files are clear InvalidArgument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from likeness.core.errors import InvalidArgument
from likeness.diffusion.lora import load_into_pipeline, peft_state_dict, read_lora, save_lora
from likeness.diffusion.pipelines import load_pipeline


def _run(pipe):
    return pipe("a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(3)).images


def _trained_like_lora(pipe):
    """A LoRA with non-zero up weights (as after training), added through PEFT like the trainer does."""
    from peft import LoraConfig

    torch.manual_seed(0)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for name, param in pipe.unet.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    return peft_state_dict(pipe.unet)


@pytest.fixture
def pipe(tiny_folders):
    return load_pipeline(tiny_folders["sdxl"], "sdxl")


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
def test_roundtrip_scale_and_removal(pipe, tmp_path, fmt):
    base = _run(pipe)
    layers = _trained_like_lora(pipe)
    trained = _run(pipe)
    assert np.abs(trained - base).max() > 1e-3  # the adapter changes the output
    pipe.unet.delete_adapters("default")
    path = save_lora(tmp_path / "a.safetensors", layers, fmt=fmt, alpha=8, metadata={"run": "r1"},
                     unet_config=dict(pipe.unet.config))

    lora = read_lora(path)
    assert (lora.format, lora.rank, lora.components) == (fmt, 4, ("unet",))
    assert lora.metadata["run"] == "r1"
    load_into_pipeline(pipe, lora, "a")
    pipe.set_adapters(["a"], [1.0])
    assert np.array_equal(_run(pipe), trained)  # alpha folded into the file: same pixels as trained
    pipe.set_adapters(["a"], [0.0])
    assert np.array_equal(_run(pipe), base)
    pipe.delete_adapters("a")
    assert np.array_equal(_run(pipe), base)


def test_corrupt_and_foreign_files(pipe, tmp_path, tiny_folders):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(InvalidArgument, match=r"adapters\[0\]\.uri: not a readable"):
        read_lora(bad, "adapters[0].uri")

    from safetensors.torch import save_file

    save_file({"model.weight": torch.zeros(2, 2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(InvalidArgument, match="unrecognised LoRA key format"):
        read_lora(tmp_path / "plain.safetensors")

    # a LoRA trained on the SD 1.5 layout does not fit SDXL's attention shapes
    sd15 = load_pipeline(tiny_folders["sd15"], "sd15")
    path = save_lora(tmp_path / "sd15.safetensors", _trained_like_lora(sd15), fmt="diffusers", family="sd15")
    with pytest.raises(InvalidArgument, match="does not fit"):
        load_into_pipeline(pipe, read_lora(path), "foreign")
    assert not pipe.get_list_adapters() or "foreign" not in str(pipe.get_list_adapters())
