"""tiny-sdxl: the SDXL architecture at toy size with random weights, for tests and the demo.

No SDXL weights can be downloaded here, yet every code path (text encoders, UNet with SDXL's
`text_time` conditioning, VAE, schedulers, LoRA, ONNX export) must run. The tiny models are built
from configs with a fixed seed, saved with `save_pretrained`, registered in the model repository,
and then loaded like real weights through `from_pretrained`. Their images are NOISE: random
weights draw nothing, so never present a tiny-model image as anything else.

Built models (all with the real 49,408-token CLIP tokenizer, VAE scale factor 8 like SDXL):
  tiny-sdxl          kind `sdxl`          base: two text encoders, UNet, VAE (default 64x64)
  tiny-sdxl-refiner  kind `sdxl-refiner`  refiner: second text encoder only, aesthetic-score conditioning
  tiny-sd15          kind `sd15`          SD 1.5 layout: one text encoder, no added conditioning
  tiny-ip-adapter-sdxl  kind `ip-adapter` IP-Adapter for tiny-sdxl: tiny CLIP image encoder +
                                          image projection + to_k_ip/to_v_ip per cross-attention
  tiny-controlnet-sdxl  kind `controlnet` ControlNet for tiny-sdxl (3-channel control image)
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from likeness.core.errors import LikenessError
from likeness.diffusion.tokenizer import (
    BOS_ID,
    CLIP_MAX_TOKENS,
    CLIP_VOCAB_SIZE,
    EOS_ID,
    write_clip_tokenizer,
)

SEED = 20261122
TINY_SIZE = 64  # default image side; latents are 8x8
TEXT_HIDDEN = 32  # each text encoder's width; SDXL cross-attention width is the sum of both
TIME_EMBED = 8  # SDXL's addition_time_embed_dim (256 in the real model)

# name -> (kind, builder name); the kinds are those of model.yaml
TINY_MODELS = {
    "tiny-sdxl": "sdxl",
    "tiny-sdxl-refiner": "sdxl-refiner",
    "tiny-sd15": "sd15",
    "tiny-ip-adapter-sdxl": "ip-adapter",
    "tiny-controlnet-sdxl": "controlnet",
}
IP_ADAPTER_WEIGHTS = "ip-adapter.safetensors"

_build_lock = threading.Lock()


def ensure_tiny_model(repo, name: str = "tiny-sdxl") -> Path:
    """Returns the local folder of tiny model `name`, building and registering it on first use.

    Idempotent and deterministic: weights come from a fixed seed, so every pod and every run builds
    the same bytes. `repo` is a `likeness.core.modelrepo.ModelRepository`; the model is registered
    with kind `sdxl` (or `sdxl-refiner` / `sd15`) and backend `diffusers`.
    """
    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; known: {sorted(TINY_MODELS)}")
    with _build_lock:
        try:
            return Path(repo.fetch(name))
        except LikenessError:  # NotFound / ModelMissing: not registered yet
            pass
        kind = TINY_MODELS[name]
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
            folder = Path(tmp) / name
            build_tiny_model(kind, folder)
            repo.register(name, folder, kind=kind, backend="diffusers", config=tiny_model_config(kind))
        return Path(repo.fetch(name))


def tiny_model_config(kind: str) -> dict:
    """The model.yaml `config` of a tiny model: what the generation service reads as defaults."""
    return {
        "default_size": TINY_SIZE,
        "max_size": 512,
        "random_weights": True,
        "note": "random weights; outputs are noise, for tests and demos only",
        "seed": SEED,
        "architecture": kind,
        **({"refiner": "tiny-sdxl-refiner", "ip_adapter": "tiny-ip-adapter-sdxl"} if kind == "sdxl" else {}),
        **({"weight_name": IP_ADAPTER_WEIGHTS, "image_encoder": "image_encoder"} if kind == "ip-adapter" else {}),
        **({"family": "sdxl"} if kind == "controlnet" else {}),
    }


def build_tiny_model(kind: str, folder: Path) -> Path:
    """Builds one tiny pipeline of `kind` and saves it (diffusers layout, safetensors) to `folder`."""

    builders = {"sdxl": _sdxl_base, "sdxl-refiner": _sdxl_refiner, "sd15": _sd15}
    if kind not in builders and kind not in ("ip-adapter", "controlnet"):
        raise ValueError(f"no tiny builder for kind {kind!r}")
    if folder.exists():
        shutil.rmtree(folder)
    if kind == "ip-adapter":
        return _ip_adapter(folder)
    if kind == "controlnet":
        from likeness.diffusion.controlnet import build_tiny_controlnet

        unet = _unet(2 * TEXT_HIDDEN, 6 * TIME_EMBED + TEXT_HIDDEN)  # tiny-sdxl's UNet
        build_tiny_controlnet(unet, SEED + 30).save_pretrained(str(folder), safe_serialization=True)
        return folder
    with tempfile.TemporaryDirectory() as tok_dir:
        pipe = builders[kind](Path(tok_dir))
        pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


# -- components ---------------------------------------------------------------------------------

def _seeded(offset: int):
    """Seeds torch for one component, so components shared by base and refiner (the VAE and the
    second text encoder, as in the released SDXL) come out identical in both."""
    import torch

    torch.manual_seed(SEED + offset)


def _text_encoder(with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=CLIP_MAX_TOKENS, hidden_size=TEXT_HIDDEN,
        intermediate_size=37, num_attention_heads=4, num_hidden_layers=3, projection_dim=TEXT_HIDDEN,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID, hidden_act="gelu",
        layer_norm_eps=1e-5)
    _seeded(2 if with_projection else 1)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def _unet(cross_attention_dim: int, added_cond_dim: int | None):
    from diffusers import UNet2DConditionModel

    extra = {}
    if added_cond_dim is not None:  # SDXL: pooled text embedding + size/crop (or aesthetic) ids
        extra = dict(addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED,
                     projection_class_embeddings_input_dim=added_cond_dim)
    _seeded(10 + cross_attention_dim + (added_cond_dim or 0))
    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, transformer_layers_per_block=(1, 1), norm_num_groups=8,
        cross_attention_dim=cross_attention_dim, **extra).eval()


def _vae():
    from diffusers import AutoencoderKL

    # four blocks -> scale factor 8, like SDXL's VAE, so sizes behave as with real weights
    _seeded(3)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=TINY_SIZE, scaling_factor=0.13025).eval()


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # SDXL's released scheduler configuration
    return EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")


def _tokenizer(tok_dir: Path, pad: str, sub: str):
    from likeness.diffusion.tokenizer import load_clip_tokenizer

    return load_clip_tokenizer(write_clip_tokenizer(tok_dir / sub, pad_token=pad))


def _sdxl_base(tok_dir: Path):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_text_encoder(False), text_encoder_2=_text_encoder(True),
        tokenizer=_tokenizer(tok_dir, "<|endoftext|>", "t1"), tokenizer_2=_tokenizer(tok_dir, "!", "t2"),
        unet=_unet(2 * TEXT_HIDDEN, 6 * TIME_EMBED + TEXT_HIDDEN), scheduler=_scheduler())


def _sdxl_refiner(tok_dir: Path):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    # the refiner conditions on (size, crop, aesthetic score): 5 time ids instead of 6
    return StableDiffusionXLImg2ImgPipeline(
        vae=_vae(), text_encoder=None, text_encoder_2=_text_encoder(True), tokenizer=None,
        tokenizer_2=_tokenizer(tok_dir, "!", "t2"), unet=_unet(TEXT_HIDDEN, 5 * TIME_EMBED + TEXT_HIDDEN),
        scheduler=_scheduler(), requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)


def _sd15(tok_dir: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=_vae(), text_encoder=_text_encoder(False), tokenizer=_tokenizer(tok_dir, "<|endoftext|>", "t1"),
        unet=_unet(TEXT_HIDDEN, None), scheduler=_scheduler(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)


def _ip_adapter(folder: Path) -> Path:
    """IP-Adapter weights in the layout diffusers' `load_ip_adapter` reads: `image_encoder/` (a
    CLIPVisionModelWithProjection) and one safetensors with `image_proj.*` (4 image tokens) and
    `ip_adapter.<n>.to_k_ip/to_v_ip.weight` for each cross-attention of tiny-sdxl's UNet."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    _seeded(20)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=TEXT_HIDDEN, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        image_size=32, patch_size=8, projection_dim=TEXT_HIDDEN)).eval()
    encoder.save_pretrained(str(folder / "image_encoder"), safe_serialization=True)
    unet = _unet(2 * TEXT_HIDDEN, 6 * TIME_EMBED + TEXT_HIDDEN)
    cross = unet.config.cross_attention_dim
    _seeded(21)
    tensors = {
        "image_proj.proj.weight": torch.randn(cross * 4, TEXT_HIDDEN) * 0.05,
        "image_proj.proj.bias": torch.zeros(cross * 4),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1  # diffusers numbers cross-attention processors 1, 3, 5, ... in attn_processors order
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        attn = unet.get_submodule(name.rsplit(".processor", 1)[0])
        shape = (attn.to_k.out_features, attn.to_k.in_features)
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(shape) * 0.05
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(shape) * 0.05
        key_id += 2
    save_file(tensors, str(folder / IP_ADAPTER_WEIGHTS))
    return folder
