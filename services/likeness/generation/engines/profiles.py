"""Shapes the ONNX/TensorRT graphs are built for: one min/opt/max optimisation profile per graph.

TensorRT builds an engine per profile; an input shape outside every profile makes it rebuild (or
fail), so the profiles are stated up front, derived from what the service is configured to serve:

- image side: `LIKENESS_GENERATION_PROFILE_MIN_SIZE` .. `..._MAX_SIZE` in pixels; 0 (default)
  takes the model's quality-mode sizes (its default side for FAST/STANDARD/QUALITY up to
  1.25x for ULTRA); opt is the default side. Width and height vary independently in that range.
- batch: 1 .. `LIKENESS_GENERATION_MAX_BATCH` images; the UNet sees twice that with classifier-free
  guidance; opt is one guided image. The VAE decoder always runs one image.

`covers(width, height, images)` says whether a batch fits; the engine sends one that does not to
the torch engine (docs/operations.md). The profile is part of the TensorRT engine cache key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from likeness.generation import presets

TOKENS = 77  # CLIP context length


@dataclass(frozen=True)
class ShapeProfile:
    min_side: int  # pixels
    opt_side: int
    max_side: int
    max_images: int  # images per pipeline call
    latent_factor: int = 8  # VAE scale factor

    @classmethod
    def for_model(cls, default_side: int, max_images: int, min_size: int = 0, max_size: int = 0,
                  model_max: int = 0) -> ShapeProfile:
        sizes = [presets.preset_size(default_side, p) for p in presets.PRESETS.values()]
        low, high = min_size or min(sizes), max_size or max(sizes)
        if model_max:
            high = min(high, model_max)
        low = min(low, high)
        return cls(min_side=low, opt_side=min(max(default_side, low), high), max_side=high, max_images=max_images)

    def covers(self, width: int, height: int, images: int) -> bool:
        return (self.min_side <= width <= self.max_side and self.min_side <= height <= self.max_side
                and 1 <= images <= self.max_images)

    def describe(self) -> str:
        return f"{self.min_side}-{self.max_side} px (opt {self.opt_side}), 1-{self.max_images} images"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def _latent(self, side: int) -> int:
        return side // self.latent_factor

    def shapes(self, graph: str, dims: dict) -> dict[str, str]:
        """TensorRT `trt_profile_{min,opt,max}_shapes` strings for `graph` (unet, vae_decoder,
        text_encoder, text_encoder_2); `dims` holds the graph's fixed sizes (channels, widths)."""
        rows = {"min": (1, 1, self.min_side), "opt": (2, 1, self.opt_side),
                "max": (2 * self.max_images, self.max_images, self.max_side)}
        out = {}
        for level, (unet_batch, text_batch, side) in rows.items():
            h = w = self._latent(side)
            if graph == "unet":
                parts = [f"sample:{unet_batch}x{dims['in_channels']}x{h}x{w}",
                         f"encoder_hidden_states:{unet_batch}x{TOKENS}x{dims['cross_attention_dim']}"]
                if dims.get("text_embeds"):
                    parts += [f"text_embeds:{unet_batch}x{dims['text_embeds']}",
                              f"time_ids:{unet_batch}x{dims['time_ids']}"]
            elif graph == "vae_decoder":
                parts = [f"latents:1x{dims['latent_channels']}x{h}x{w}"]
            else:
                parts = [f"input_ids:{text_batch}x{TOKENS}"]
            out[level] = ",".join(parts)
        return out


def provider_options(providers: list[str], profile: ShapeProfile, graph: str, dims: dict, cache_dir) -> list:
    """ONNX Runtime `providers` argument: TensorRT gets its profile shapes and an engine cache
    folder keyed by the profile (a changed profile never reuses engines built for another)."""
    out: list = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            shapes = profile.shapes(graph, dims)
            out.append((name, {"trt_engine_cache_enable": True, "trt_fp16_enable": True,
                               "trt_engine_cache_path": str(cache_dir / "trt" / f"{graph}-{profile.digest()}"),
                               "trt_profile_min_shapes": shapes["min"], "trt_profile_opt_shapes": shapes["opt"],
                               "trt_profile_max_shapes": shapes["max"]}))
        else:
            out.append(name)
    return out
