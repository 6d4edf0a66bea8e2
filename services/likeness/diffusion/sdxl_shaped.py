"""sdxl-shaped: the full-size SDXL base (and refiner) architecture with RANDOM weights.

No SDXL weights can be downloaded here, yet compute and memory must be measured at real size. The
component configurations below are those published with stabilityai/stable-diffusion-xl-base-1.0
and stable-diffusion-xl-refiner-1.0 (unet, vae, text_encoder, text_encoder_2, scheduler), written
out in code; the parameter counts match the released models (UNet 2,567,463,684, refiner UNet 2.26 B,
CLIP ViT-L text 123 M, OpenCLIP bigG text 695 M, VAE 84 M). The weights are drawn from a fixed seed
directly in the target dtype (bf16 or fp16: ~7 GB for the base pipeline instead of ~14 GB in fp32).
Its images are NOISE; only its timings and memory mean anything.

Built models (kinds as in model.yaml):
  sdxl-shaped          kind `sdxl`          two text encoders, UNet, VAE (default 1024x1024)
  sdxl-shaped-refiner  kind `sdxl-refiner`  second text encoder, refiner UNet, VAE
They are never built implicitly (several GB each): `ensure_sdxl_shaped_model` builds and registers
one on request (bench/generation.py --sdxl-shaped, bench/gpu_check.sh).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from likeness.core.errors import LikenessError
from likeness.diffusion.tokenizer import BOS_ID, CLIP_MAX_TOKENS, CLIP_VOCAB_SIZE, EOS_ID

SEED = 20261203
SDXL_SHAPED_MODELS = {"sdxl-shaped": "sdxl", "sdxl-shaped-refiner": "sdxl-refiner"}

# stable-diffusion-xl-base-1.0/unet/config.json (fields that differ from diffusers' defaults)
BASE_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, norm_eps=1e-5,
)
# stable-diffusion-xl-refiner-1.0/unet/config.json
REFINER_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(384, 768, 1536, 1536),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(6, 12, 24, 24), transformer_layers_per_block=4, cross_attention_dim=1280,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2560, norm_num_groups=32, norm_eps=1e-5,
)
# vae/config.json (shared by base and refiner); force_upcast: the released fp16 VAE overflows
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=1024, scaling_factor=0.13025,
    force_upcast=True,
)
# text_encoder/config.json: OpenAI CLIP ViT-L/14 text tower
TEXT_ENCODER = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                    hidden_act="quick_gelu", projection_dim=768)
# text_encoder_2/config.json: OpenCLIP ViT-bigG/14 text tower (with its projection)
TEXT_ENCODER_2 = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                      hidden_act="gelu", projection_dim=1280)
# scheduler/scheduler_config.json
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 steps_offset=1, timestep_spacing="leading", prediction_type="epsilon",
                 interpolation_type="linear", use_karras_sigmas=False)


@contextlib.contextmanager
def _default_dtype(dtype):
    """Parameters are created (and randomly initialised) directly in `dtype`: no fp32 copy exists."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def unet(kind: str = "sdxl"):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**(REFINER_UNET if kind == "sdxl-refiner" else BASE_UNET)).eval()


def vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE).eval()


def text_encoder(second: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=CLIP_MAX_TOKENS, layer_norm_eps=1e-5,
                            bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
                            **(TEXT_ENCODER_2 if second else TEXT_ENCODER))
    return (CLIPTextModelWithProjection if second else CLIPTextModel)(config).eval()


def build_pipeline(kind: str = "sdxl", dtype=None, device: str = "cpu"):
    """The full-size pipeline of `kind` in memory, weights drawn from SEED in `dtype` (default bf16)
    directly on `device` (on a GPU the random initialisation takes seconds instead of minutes)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    from likeness.diffusion.tokenizer import load_clip_tokenizer, write_clip_tokenizer

    if kind not in ("sdxl", "sdxl-refiner"):
        raise ValueError(f"no sdxl-shaped builder for kind {kind!r}")
    dtype = dtype or torch.bfloat16
    torch.manual_seed(SEED)
    scheduler = EulerDiscreteScheduler(**SCHEDULER)
    with tempfile.TemporaryDirectory() as tok_dir:
        tokenizer = load_clip_tokenizer(write_clip_tokenizer(Path(tok_dir) / "t1", pad_token="<|endoftext|>"))
        tokenizer_2 = load_clip_tokenizer(write_clip_tokenizer(Path(tok_dir) / "t2", pad_token="!"))
    with _default_dtype(dtype), torch.device(device):  # only the networks: on `device`, in `dtype`
        if kind == "sdxl-refiner":
            return StableDiffusionXLImg2ImgPipeline(
                vae=vae(), text_encoder=None, text_encoder_2=text_encoder(True), tokenizer=None,
                tokenizer_2=tokenizer_2, unet=unet(kind), scheduler=scheduler, requires_aesthetics_score=True,
                force_zeros_for_empty_prompt=False)
        return StableDiffusionXLPipeline(
            vae=vae(), text_encoder=text_encoder(False), text_encoder_2=text_encoder(True), tokenizer=tokenizer,
            tokenizer_2=tokenizer_2, unet=unet(kind), scheduler=scheduler)


def model_config(kind: str, dtype_name: str) -> dict:
    """The model.yaml `config`: defaults the generation service reads, and the stand-in's label."""
    return {
        "default_size": 1024, "max_size": 2048, "random_weights": True, "architecture": f"{kind} (full size)",
        "note": "sdxl-shaped: the released SDXL architecture with random weights; outputs are noise, "
                "for timing and memory measurements only",
        "seed": SEED, "weights_dtype": dtype_name,
        **({"refiner": "sdxl-shaped-refiner"} if kind == "sdxl" else {}),
    }


def ensure_sdxl_shaped_model(repo, name: str = "sdxl-shaped", dtype=None) -> Path:
    """The local folder of `name`, building (in `dtype`, default bf16), saving and registering it
    on first use. The pipeline is freed before registration, so at most one copy is ever in memory."""
    import gc

    import torch

    if name not in SDXL_SHAPED_MODELS:
        raise ValueError(f"unknown sdxl-shaped model {name!r}; known: {sorted(SDXL_SHAPED_MODELS)}")
    try:
        return Path(repo.fetch(name))
    except LikenessError:  # not registered yet
        pass
    kind, dtype = SDXL_SHAPED_MODELS[name], dtype or torch.bfloat16
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        folder = Path(tmp) / name
        pipe = build_pipeline(kind, dtype)
        pipe.save_pretrained(str(folder), safe_serialization=True)
        del pipe
        gc.collect()
        repo.register(name, folder, kind=kind, backend="diffusers",
                      config=model_config(kind, str(dtype).replace("torch.", "")))
    return Path(repo.fetch(name))


def ensure_sdxl_shaped_controlnet(repo, unet, name: str = "sdxl-shaped-controlnet") -> Path:
    """The local folder of a full-size SDXL ControlNet (the encoder half of `unet`, the loaded
    sdxl-shaped UNet, with random zero convolutions), building and registering it on first use. It
    is built in `unet`'s dtype (no float32 copy: ~2.5 GB in bf16) and freed before registration."""
    from likeness.diffusion.controlnet import KIND, build_tiny_controlnet

    try:
        return Path(repo.fetch(name))
    except LikenessError:  # not registered yet
        pass
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        folder = Path(tmp) / name
        with _default_dtype(unet.dtype):
            net = build_tiny_controlnet(unet, SEED)
        net.save_pretrained(str(folder), safe_serialization=True)
        del net
        repo.register(name, folder, kind=KIND, backend="diffusers",
                      config={"family": "sdxl", "random_weights": True, "architecture": "sdxl controlnet (full size)",
                              "seed": SEED, "weights_dtype": str(unet.dtype).replace("torch.", "")})
    return Path(repo.fetch(name))
