"""Settings of the generation service (`LIKENESS_GENERATION_*`)."""

from __future__ import annotations

from pydantic import Field

from likeness.core.devices import DEVICE_PATTERN, DTYPE_PATTERN
from likeness.core.settings import CommonSettings


class GenerationSettings(CommonSettings):
    # `torch` (default) or `onnxruntime` (UNet, VAE decoder exported to ONNX on first use).
    generation_engine: str = Field("torch", pattern="^(torch|onnxruntime)$")
    # torch device: `cpu`, `cuda`, `cuda:1`; dtype `auto` (float16 on CUDA, float32 on the CPU),
    # `float32`, `float16` or `bfloat16` (fp16/bf16 also run on the CPU, slowly: dtype tests).
    generation_device: str = Field("cpu", pattern=DEVICE_PATTERN)
    generation_dtype: str = Field("auto", pattern=DTYPE_PATTERN)
    # CPU threads for torch and ONNX Runtime intra-op work; 0 = the library default (all cores).
    # Set it to the pod's CPU limit: oversubscribed OpenMP pools slow tiny models down 10-50x.
    generation_cpu_threads: int = Field(0, ge=0, le=256)
    # ONNX Runtime execution providers in order of preference; on GPU nodes
    # `TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider`.
    generation_onnx_providers: str = "CPUExecutionProvider"
    # `int8_weight_only`: the torch engine stores the UNet's linear weights as int8 (torchao), which
    # halves their memory against bf16/fp16; `none` keeps them in the engine's dtype.
    generation_unet_quantization: str = Field("none", pattern="^(none|int8_weight_only)$")
    # GPU speed-ups of the torch engine (attention is always PyTorch's scaled_dot_product_attention,
    # diffusers' default): channels-last memory format for the UNet and VAE, and torch.compile of
    # the UNet. `reduce-overhead` also records CUDA graphs, which pay off when the shapes repeat
    # (fixed sizes and batch); every new shape compiles once (tens of seconds for SDXL).
    generation_channels_last: bool = False
    generation_torch_compile: str = Field("none", pattern="^(none|default|reduce-overhead|max-autotune)$")
    # Exported ONNX graphs and TensorRT engine caches live here, one folder per model digest.
    generation_engine_cache_dir: str = "/tmp/likeness/engine-cache"
    # Shape profile of the graphs (TensorRT min/opt/max): image side range in pixels; 0 = the
    # model's quality-mode sizes (default side .. 1.25x for ULTRA). Batches outside it run on the
    # torch engine when profiles are enforced: `auto` = when TensorRT is configured, `always`.
    generation_profile_min_size: int = Field(0, ge=0, le=4096)
    generation_profile_max_size: int = Field(0, ge=0, le=4096)
    generation_profile_routing: str = Field("auto", pattern="^(auto|always)$")

    # Models loaded at warm-up and never unloaded (comma-separated); the first is the default model.
    generation_keep_warm: str = "tiny-sdxl"
    # Other models are unloaded after this many idle seconds (0 = never).
    generation_idle_unload_seconds: float = Field(600.0, ge=0)
    # Build the tiny random-weight models into the repository when they are missing (embedded mode).
    generation_build_tiny_models: bool = True

    # Dynamic batching: images per pipeline call, how long the first request waits for batch-mates,
    # and how many images may wait in the queue before RESOURCE_EXHAUSTED.
    generation_max_batch: int = Field(4, ge=1, le=64)
    generation_max_wait_ms: float = Field(50.0, ge=0, le=10_000)
    generation_queue_capacity: int = Field(64, ge=1)

    # Limits of one request.
    generation_max_size: int = Field(2048, ge=64, le=4096)
    generation_max_count: int = Field(16, ge=1, le=64)
    generation_max_steps: int = Field(200, ge=1)
    # Memory budget of the LoRA adapters kept loaded (least recently used are dropped first).
    generation_lora_budget_mb: float = Field(512.0, gt=0)
    # Largest adapter file accepted.
    generation_max_lora_mb: float = Field(1024.0, gt=0)
