"""LCM-LoRA: Latent Consistency Model LoRAs that let a base model sample in 4-8 steps with the LCM
scheduler (Luo et al., 2023, "LCM-LoRA: A Universal Stable-Diffusion Acceleration Module").

Model repository layout: a model of kind `lcm-lora` whose folder holds the LoRA file (diffusers or
kohya keys, as released: `pytorch_lora_weights.safetensors`) and whose model.yaml config names the
base model it was distilled for (`base: sdxl-base-1.0`) and, optionally, `weight_name`. The
generation service's FAST preset uses it for that base model (presets.LCM_STEPS steps, the `lcm`
sampler, guidance presets.LCM_GUIDANCE) and says so in the response (`lcm_lora`).

`ensure_tiny_lcm_lora` registers `tiny-lcm-lora-sdxl`: a STAND-IN with random LoRA layers in that
layout for tiny-sdxl. It proves the path (registration, lookup, loading, LCM sampling); it is not
distilled, so its few-step images are no better than any other random-weight image.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from likeness.core.errors import LikenessError

KIND = "lcm-lora"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"
TINY_NAME = "tiny-lcm-lora-sdxl"


def lcm_lora_for(repo, model: str) -> str:
    """The name of the LCM-LoRA registered for base `model` ("" when none), first by name."""
    for spec in repo.list():
        if spec.kind == KIND and spec.config.get("base") == model:
            return spec.name
    return ""


def weight_file(repo, name: str) -> Path:
    spec = repo.spec(name)
    return Path(repo.fetch(name)) / str(spec.config.get("weight_name") or WEIGHT_NAME)


def ensure_tiny_lcm_lora(repo, base: str = "tiny-sdxl") -> Path:
    """Registers (once) the random-weight stand-in LCM-LoRA for tiny-sdxl; returns its folder."""
    import torch
    from peft import LoraConfig

    from likeness.diffusion.lora import peft_state_dict, save_lora
    from likeness.diffusion.pipelines import load_pipeline
    from likeness.diffusion.tiny_sdxl import SEED, ensure_tiny_model

    try:
        return Path(repo.fetch(TINY_NAME))
    except LikenessError:
        pass
    pipe = load_pipeline(ensure_tiny_model(repo, base), "sdxl")
    torch.manual_seed(SEED + 30)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_B" in name:  # non-zero, so the adapter visibly changes the output
                param.normal_(0, 0.5)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / TINY_NAME
        folder.mkdir()
        save_lora(folder / WEIGHT_NAME, peft_state_dict(pipe.unet))
        repo.register(TINY_NAME, folder, kind=KIND, backend="diffusers",
                      config={"base": base, "weight_name": WEIGHT_NAME, "random_weights": True,
                              "note": "stand-in: random LoRA layers in the LCM-LoRA layout; proves the path only"})
    return Path(repo.fetch(TINY_NAME))
