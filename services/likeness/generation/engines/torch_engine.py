"""The torch engine: diffusers pipelines, run in three timed phases (text encoding, denoising,
decoding) so each is measured and the ONNX engine can swap the UNet and VAE underneath.

Determinism: one CPU `torch.Generator` per image seeded with that image's seed; initial latents
are drawn per image from it, so noise never depends on batch-mates (or on the device). Each image
is decoded on its own, so the decoder never sees batch-mates either.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager

import numpy as np

from likeness.core.devices import dtype_name, require_device, torch_dtype
from likeness.diffusion.pipelines import load_pipeline
from likeness.diffusion.samplers import make_scheduler
from likeness.generation.engines.base import BatchKey, Engine, ImageItem, ImageResult


def noise_seed(seed: int) -> int:
    """Seed of the extra noise mixed in by `noise_injection` (derived, so it differs from `seed`)."""
    return int.from_bytes(hashlib.sha256(f"noise-injection:{seed}".encode()).digest()[:8], "little") >> 1


def main_task(kind: str) -> str:
    if kind == "sdxl-refiner":
        return "image-to-image"
    return "inpaint" if kind.endswith("inpaint") else "text-to-image"


class TorchEngine(Engine):
    name = "torch"
    supports_adapters = True
    supports_reference = True

    def __init__(self, settings):
        import torch
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()  # progress goes to metrics and GenerateStream, not stderr
        transformers_logging.disable_progress_bar()
        self.device = require_device(settings.generation_device, "LIKENESS_GENERATION_DEVICE")
        self.cpu_threads = settings.generation_cpu_threads
        if self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        self.dtype = torch_dtype(getattr(settings, "generation_dtype", "auto"), self.device)
        self.unet_quantization = getattr(settings, "generation_unet_quantization", "none")
        self.channels_last = getattr(settings, "generation_channels_last", False)
        self.compile_mode = getattr(settings, "generation_torch_compile", "none")

    def describe(self) -> dict:
        return {"engine": self.name, "device": self.device, "dtype": dtype_name(self.dtype),
                "cpu_threads": self.cpu_threads, "unet_quantization": self.unet_quantization,
                "channels_last": self.channels_last, "torch_compile": self.compile_mode}

    def load(self) -> None:
        """The runtime is set up in __init__ (logging, threads, dtype); models load in `load_model`."""

    def warmup(self) -> None:
        """Nothing model-independent to warm: the service warms its keep-warm models by generating."""

    def load_model(self, folder, spec):
        pipe = load_pipeline(folder, spec.kind, main_task(spec.kind), dtype=self.dtype, device=self.device)
        if self.unet_quantization == "int8_weight_only":
            from likeness.diffusion.quantize import quantize_unet_int8

            quantize_unet_int8(pipe.unet)
        if self.name == TorchEngine.name:  # subclasses export the UNet: they get the eager module
            self.speed_up(pipe)
        return pipe

    def speed_up(self, pipe) -> None:
        """Channels-last and torch.compile of the UNet, as the settings ask (no-ops by default).
        The compiled module wraps the same weights; LoRA adapters on a compiled UNet are not
        verified (keep compile off where adapters are served)."""
        import torch

        if self.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        if self.compile_mode != "none":
            pipe.unet = torch.compile(pipe.unet, mode=self.compile_mode)

    # -- one batch ------------------------------------------------------------------------------

    def set_ip_adapter(self, model, name: str, folder=None, config: dict | None = None) -> None:
        """Loads IP-Adapter `name` from `folder` into the model (or unloads it when `name` is "").
        Kept loaded across consecutive reference batches; the UNet's cross-attention processors
        change, so a batch without a reference unloads it first."""
        if model.ip_adapter == name:
            return
        if model.ip_adapter:
            model.pipe.unload_ip_adapter()
            model.ip_adapter = ""
        if name:
            config = config or {}
            model.pipe.load_ip_adapter(str(folder), subfolder="",
                                       weight_name=config.get("weight_name", "ip-adapter.safetensors"),
                                       image_encoder_folder=config.get("image_encoder", "image_encoder"))
            model.ip_adapter = name
        model.forget_derived()

    def run(self, model, refiner, key: BatchKey, items: list[ImageItem], files: dict,
            controlnets: list | None = None) -> list[ImageResult]:
        """Runs `items` as one pipeline call; `refiner` is the loaded refiner model or None;
        `files` maps adapter ids to parsed LoRA files not yet loaded. The IP-Adapter state must
        match `key` (see set_ip_adapter)."""
        import torch

        started = time.monotonic()
        if key.controls:
            pipe = model.control_pipeline(key.task, tuple(c[0] for c in key.controls), controlnets)
        else:
            pipe = model.pipeline(key.task)
        pipe.scheduler = make_scheduler(key.sampler, model.default_scheduler_config)
        model.adapters.activate(pipe, key.adapters, files)
        generators = [torch.Generator("cpu").manual_seed(item.seed) for item in items]
        cfg = key.guidance_scale > 1.0

        with torch.inference_mode():
            t0 = time.monotonic()
            embeds = self.encode(pipe, model.family, items, cfg)
            t1 = time.monotonic()
            kwargs = self._call_kwargs(pipe, key, items, generators, embeds)
            if refiner is not None:
                kwargs["denoising_end"] = 1.0 - key.refiner_fraction
            latents = pipe(**kwargs).images
            refine_encoding = 0.0
            if refiner is not None:
                latents, refine_encoding = self.refine(refiner, key, items, latents, generators, cfg)
            t2 = time.monotonic()
            with upcast_vae(pipe.vae):  # once per batch, not per image
                images = [self.decode(pipe, latents[i : i + 1]) for i in range(len(items))]
            t3 = time.monotonic()

        timings = {"text_encoding": t1 - t0 + refine_encoding, "denoising": t2 - t1 - refine_encoding,
                   "decoding": t3 - t2}
        return [ImageResult(rgb, len(items), {**timings, "queue": max(0.0, started - item.queued_at)})
                for rgb, item in zip(images, items, strict=True)]

    def _call_kwargs(self, pipe, key: BatchKey, items: list[ImageItem], generators, embeds: dict) -> dict:
        """The pipeline call's arguments for the key's task, controls and reference image."""
        kwargs = dict(num_inference_steps=key.steps, guidance_scale=key.guidance_scale, width=key.width,
                      height=key.height, generator=generators, output_type="latent",
                      callback_on_step_end=_progress_callback(items, "denoise"), **embeds)
        if key.task == "text-to-image":
            kwargs["latents"] = self.initial_latents(pipe, key, items, generators)
        else:
            kwargs.update(image=[_pil(i.init_image) for i in items], strength=key.strength)
            if key.task == "inpaint":
                kwargs["mask_image"] = [_pil_mask(i.mask) for i in items]
        if key.controls:
            from likeness.diffusion.controlnet import control_kwargs

            images = [[item.control_images[c] for item in items] for c in range(len(key.controls))]
            kwargs.update(control_kwargs(key.task, images, *([c[n] for c in key.controls] for n in (1, 2, 3))))
        if key.reference_scale is not None:
            pipe.set_ip_adapter_scale(key.reference_scale)
            kwargs["ip_adapter_image"] = [[_pil(i.reference_image) for i in items]]
        return kwargs

    def encode(self, pipe, family: str, items: list[ImageItem], cfg: bool) -> dict:
        """Prompt embeddings of the batch. An empty negative prompt gives zero embeddings where the
        model asks for it (SDXL's force_zeros_for_empty_prompt), row by row, as it would alone."""
        prompts = [i.prompt for i in items]
        negatives = [i.negative_prompt for i in items]
        device = pipe._execution_device
        if family == "sd15":
            pe, npe = pipe.encode_prompt(prompts, device, 1, cfg, negatives)
            return {"prompt_embeds": pe, "negative_prompt_embeds": npe}
        zero_empty = cfg and pipe.config.get("force_zeros_for_empty_prompt", False)
        if zero_empty and not any(negatives):
            # diffusers then gives zero embeddings without running both text encoders on "" (as a
            # bare pipeline call does); encoding "" only to zero it doubled the encoding time
            negatives = None
        pe, npe, ppe, nppe = pipe.encode_prompt(prompt=prompts, device=device, num_images_per_prompt=1,
                                                do_classifier_free_guidance=cfg, negative_prompt=negatives)
        if zero_empty and negatives is not None:
            for row, neg in enumerate(negatives):
                if not neg:
                    npe[row].zero_()
                    nppe[row].zero_()
        out = {"prompt_embeds": pe, "pooled_prompt_embeds": ppe}
        if cfg:
            out.update(negative_prompt_embeds=npe, negative_pooled_prompt_embeds=nppe)
        return out

    def initial_latents(self, pipe, key: BatchKey, items: list[ImageItem], generators):
        """Per-image starting noise; `noise_injection` s mixes in extra seeded noise:
        x = sqrt(1 - s) * z_seed + sqrt(s) * z_noise_seed (unit variance is kept)."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        shape = (1, pipe.unet.config.in_channels, key.height // pipe.vae_scale_factor,
                 key.width // pipe.vae_scale_factor)
        rows = []
        for item, gen in zip(items, generators, strict=True):
            z = randn_tensor(shape, generator=gen, dtype=torch.float32)
            if item.noise_injection > 0:
                extra = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(noise_seed(item.seed)),
                                     dtype=torch.float32)
                s = item.noise_injection
                z = (1 - s) ** 0.5 * z + s**0.5 * extra
            rows.append(z)
        return torch.cat(rows).to(device=pipe._execution_device, dtype=pipe.unet.dtype)

    def refine(self, refiner, key: BatchKey, items: list[ImageItem], latents, generators, cfg: bool):
        """The refiner denoises the last `refiner_fraction` of the schedule (ensemble of experts)."""
        task = "inpaint" if key.task == "inpaint" else "image-to-image"
        pipe = refiner.pipeline(task)
        pipe.scheduler = make_scheduler(key.sampler, refiner.default_scheduler_config)
        t0 = time.monotonic()
        embeds = self.encode(pipe, "sdxl", items, cfg)
        encoding = time.monotonic() - t0
        kwargs = dict(image=latents, num_inference_steps=key.steps, denoising_start=1.0 - key.refiner_fraction,
                      guidance_scale=key.guidance_scale, generator=generators, output_type="latent",
                      callback_on_step_end=_progress_callback(items, "refine"), **embeds)
        if task == "inpaint":
            # the inpaint pipeline sizes the mask from height/width (default: the model's size),
            # not from the latents it is given
            kwargs.update(mask_image=[_pil_mask(i.mask) for i in items], height=key.height, width=key.width)
        return pipe(**kwargs).images, encoding

    def decode(self, pipe, latents) -> np.ndarray:
        """Latents of one image -> HxWx3 uint8 (diffusers' own rounding: round(x * 255)).

        A float16 VAE whose config sets `force_upcast` (the stock SDXL VAE overflows in float16 and
        decodes to NaN, i.e. black images) decodes in float32, as diffusers' pipelines do."""
        vae = pipe.vae
        with upcast_vae(vae):
            return self._decode(pipe, vae, latents)

    def _decode(self, pipe, vae, latents) -> np.ndarray:
        latents = latents.to(vae.dtype)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            import torch

            mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
            std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        image = self.vae_decode(vae, latents)
        array = pipe.image_processor.postprocess(image, output_type="np")[0]
        return (array * 255).round().astype(np.uint8)

    def vae_decode(self, vae, latents):
        return vae.decode(latents, return_dict=False)[0]


@contextmanager
def upcast_vae(vae):
    """float32 for the duration of a decode when diffusers would upcast (float16 + force_upcast);
    the VAE goes back to float16 afterwards, so img2img encoding and memory stay as loaded."""
    import torch

    if vae.dtype != torch.float16 or not getattr(vae.config, "force_upcast", False):
        yield
        return
    vae.to(dtype=torch.float32)
    try:
        yield
    finally:
        vae.to(dtype=torch.float16)


def _progress_callback(items: list[ImageItem], stage: str):
    reporters = list({id(i.progress): i.progress for i in items if i.progress is not None}.values())

    def on_step_end(pipe, step, timestep, callback_kwargs):
        total = getattr(pipe, "num_timesteps", 0) or 0
        for report in reporters:
            report(stage, step + 1, total)
        return callback_kwargs

    return on_step_end


def _pil(rgb: np.ndarray):
    from PIL import Image

    return Image.fromarray(rgb, "RGB")


def _pil_mask(mask: np.ndarray):
    from PIL import Image

    return Image.fromarray(mask.astype(np.uint8) * 255, "L")
