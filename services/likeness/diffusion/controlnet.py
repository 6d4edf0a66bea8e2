"""ControlNet: conditioning a diffusion pipeline on a control image (a face-landmark map, an edge
map) through diffusers' ControlNet pipelines, sharing the loaded pipeline's components.

A ControlNet model folder (model.yaml kind `controlnet`, `config.family` sdxl or sd15) holds a
diffusers `ControlNetModel`. Several controls of one request run as a multi-ControlNet.
"""

from __future__ import annotations

from pathlib import Path

from likeness.core.errors import InvalidArgument, ModelMissing
from likeness.diffusion.pipelines import TASKS, diffusers_class

KIND = "controlnet"
FAMILIES = ("sdxl", "sd15")


def control_pipeline_class(family: str, task: str):
    if family not in FAMILIES or task not in TASKS:
        raise InvalidArgument("controls", f"no ControlNet pipeline for {family} {task}")
    return diffusers_class(family, task, controlnet=True)


def derive_control_pipeline(pipe, family: str, task: str, controlnets: list):
    """`pipe`'s components (weights, LoRA layers, scheduler) with the ControlNet(s) attached."""
    from diffusers.models.controlnets import MultiControlNetModel

    net = controlnets[0] if len(controlnets) == 1 else MultiControlNetModel(controlnets)
    # the pipeline's own dtype: from_pipe's default casts the shared modules (and the ControlNet) to float32
    derived = control_pipeline_class(family, task).from_pipe(pipe, controlnet=net, dtype=pipe.dtype)
    derived.set_progress_bar_config(disable=True)
    return derived


def load_controlnet(folder: str | Path, name: str, *, dtype=None, device: str = "cpu"):
    import torch
    from diffusers import ControlNetModel

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelMissing(name, str(folder / "config.json"))
    from likeness.diffusion.pipelines import own_memory

    net = ControlNetModel.from_pretrained(str(folder), torch_dtype=dtype or torch.float32).eval()
    if device != "cpu":
        return net.to(device)
    own_memory(net)  # not left mapped from its file (see own_memory)
    return net


def control_kwargs(task: str, images: list[list], scales: list[float], starts: list[float],
                   ends: list[float]) -> dict:
    """Pipeline arguments: `images[c][i]` is control c's image (HxWx3 uint8) for batch item i.

    Each control goes in as one (batch, 3, H, W) tensor in [0, 1]: diffusers' multi-ControlNet
    refuses per-item image lists ("a single batch of multiple conditionings"), a batch tensor
    per control carries the same thing."""
    import numpy as np
    import torch

    tensors = [torch.from_numpy(np.stack(per_item)).permute(0, 3, 1, 2).float().div(255.0) for per_item in images]
    one = len(tensors) == 1
    per_control = tensors[0] if one else tensors
    kwargs = {"controlnet_conditioning_scale": scales[0] if one else scales,
              "control_guidance_start": starts[0] if one else starts,
              "control_guidance_end": ends[0] if one else ends}
    kwargs["image" if task == "text-to-image" else "control_image"] = per_control
    return kwargs


def build_tiny_controlnet(unet, seed: int):
    """A ControlNet shaped after `unet` with random weights everywhere. diffusers initialises the
    zero convolutions to zero (a fresh ControlNet changes nothing); here they get small random
    weights so that a control visibly changes the output, as a trained ControlNet does."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_channels=3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "conv_out" in name:
                p.normal_(0.0, 0.2)
    return net.eval()
