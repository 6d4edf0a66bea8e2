"""Settings of the embedding service (`LIKENESS_EMBEDDING_*`), read once at start-up."""

from __future__ import annotations

from pydantic import Field

from likeness.core.devices import DEVICE_PATTERN, DTYPE_PATTERN
from likeness.core.settings import CommonSettings


class EmbeddingSettings(CommonSettings):
    # Image encoder: `classical` (embedded default, no weights, no text tower: EmbedTexts and Score
    # answer FAILED_PRECONDITION) or `open_clip` (image and text towers; weights from the model
    # repository). For tests and demos, `open_clip` with the model `tiny-clip` (random weights,
    # built on first use when LIKENESS_EMBEDDING_BUILD_TINY=true) exercises every text path.
    embedding_encoder: str = Field("classical", pattern="^(classical|open_clip)$")
    # open_clip model name in the model repository (model.yaml kind `open_clip`).
    embedding_open_clip_model: str = "open-clip-vit-b-32"
    # Build and register the random-weight `tiny-clip` when it is the configured model and absent.
    embedding_build_tiny: bool = False
    # torch threads for open_clip inference (0 = torch's default, one per core); images per pass.
    embedding_threads: int = Field(0, ge=0, le=64)
    embedding_encoder_batch: int = Field(16, ge=1, le=256)
    # Where open_clip runs: torch device (`cpu`, `cuda`, `cuda:N`) and dtype (`auto` = float16 on
    # CUDA, float32 on the CPU; or float32, float16, bfloat16). Vectors are returned as float32.
    embedding_device: str = Field("cpu", pattern=DEVICE_PATTERN)
    embedding_dtype: str = Field("auto", pattern=DTYPE_PATTERN)
    # BLAS/OpenMP threads for Cluster, Select and Diversity (0 = the libraries' default, one per
    # core of the NODE, which oversubscribes a pod with a CPU limit). Measured on 2 busy cores:
    # one thread is 5-7x faster for 250 x 512 K-Means (bench/embedding.py).
    embedding_compute_threads: int = Field(1, ge=0, le=64)
    # Images per EmbedImages / Score request.
    embedding_max_batch: int = Field(256, ge=1, le=4096)
    # Score's 0-1 mapping: score = clip(scale * cosine, 0, 1). 2.5 is CLIPScore's w (Hessel et al.
    # 2021), under which the seed's 0.70 threshold is a raw cosine of 0.28 (docs/api/embedding.md).
    embedding_score_scale: float = Field(2.5, gt=0.0, le=100.0)
    # Cluster: exact K-Means and silhouettes up to this many items; mini-batch K-Means and
    # silhouettes estimated against a reference sample above it.
    embedding_exact_cluster_limit: int = Field(10_000, ge=100, le=1_000_000)
    embedding_silhouette_sample: int = Field(1_000, ge=100, le=100_000)
    # Cluster: K-Means restarts (the best inertia wins).
    embedding_kmeans_n_init: int = Field(4, ge=1, le=50)
