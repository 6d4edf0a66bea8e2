"""Diffusers pipelines built from model-repository folders, shared by generation and training.

A model folder holds one diffusers pipeline (`model_index.json` + component folders) of a `kind`
recorded in model.yaml. `load_pipeline` loads it for a task; `derive_pipeline` re-wraps an already
loaded pipeline for another task with the SAME components (no second copy of the weights), so a
service loads each model once and runs text-to-image, image-to-image and inpainting from it.
"""

from __future__ import annotations

from pathlib import Path

from likeness.core.errors import FailedPrecondition, InvalidArgument, ModelMissing

KINDS = ("sdxl", "sdxl-refiner", "sdxl-inpaint", "sd15", "sd15-inpaint")
TASKS = ("text-to-image", "image-to-image", "inpaint")


def pipeline_class(kind: str, task: str):
    """The diffusers pipeline class that runs `task` on a model of `kind`."""
    if kind not in KINDS:
        raise FailedPrecondition("model", f"kind {kind!r} is not a diffusion pipeline; known kinds: {', '.join(KINDS)}")
    if task not in TASKS:
        raise InvalidArgument("task", f"unknown task {task!r}; known: {', '.join(TASKS)}")
    family = "sdxl" if kind.startswith("sdxl") else "sd15"
    if kind == "sdxl-refiner" and task == "text-to-image":
        # the refiner only denoises existing latents/images
        raise InvalidArgument("task", "an sdxl-refiner model runs image-to-image or inpaint, not text-to-image")
    return diffusers_class(family, task)


# diffusers names its pipelines StableDiffusion[XL][ControlNet][Img2Img|Inpaint]Pipeline.
_TASK_NAME = {"text-to-image": "", "image-to-image": "Img2Img", "inpaint": "Inpaint"}


def diffusers_class(family: str, task: str, controlnet: bool = False):
    """diffusers' pipeline class for a model `family` (sdxl | sd15) and a task of TASKS, with
    ControlNet conditioning or without."""
    import diffusers

    xl = "XL" if family == "sdxl" else ""
    return getattr(diffusers, f"StableDiffusion{xl}{'ControlNet' if controlnet else ''}{_TASK_NAME[task]}Pipeline")


def load_pipeline(path: str | Path, kind: str, task: str = "text-to-image", *, dtype=None, device: str = "cpu"):
    """Loads the pipeline in folder `path` (diffusers layout) for `task` on `device`.

    Raises ModelMissing naming `model_index.json` when the folder holds no pipeline. `dtype`
    defaults to float32 (CPU); pass torch.float16 on GPU nodes.
    """
    import torch

    folder = Path(path)
    if not (folder / "model_index.json").is_file():
        raise ModelMissing(folder.name, str(folder / "model_index.json"))
    cls = pipeline_class(kind, task)
    kwargs = {"dtype": dtype or torch.float32}
    if kind.startswith("sd15"):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = cls.from_pretrained(str(folder), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    if device != "cpu":
        return pipe.to(device)
    own_memory(pipe)
    return pipe


def own_memory(pipe) -> None:
    """Copies weights still mapped from their safetensors files into the process's own memory.

    `pipe` is a pipeline (all its modules) or one module.

    from_pretrained leaves tensors that need no conversion as views of a file mapping: nothing is
    read until the first image touches it (the first request pays the disk reads), and under memory
    pressure the kernel drops those clean pages and re-reads them in the middle of later requests.
    One tensor at a time, so the peak is the mapped file plus one tensor."""
    import torch

    with torch.no_grad():
        for component in (pipe.components.values() if hasattr(pipe, "components") else [pipe]):
            if isinstance(component, torch.nn.Module):
                for tensor in (*component.parameters(), *component.buffers()):
                    tensor.data = tensor.data.clone()


def derive_pipeline(pipe, kind: str, task: str):
    """The pipeline for `task` sharing `pipe`'s components (weights, LoRA layers, scheduler)."""
    cls = pipeline_class(kind, task)
    if isinstance(pipe, cls):
        return pipe
    derived = cls.from_pipe(pipe, dtype=pipe.dtype)  # from_pipe's default casts the SHARED modules to float32
    derived.set_progress_bar_config(disable=True)
    return derived
