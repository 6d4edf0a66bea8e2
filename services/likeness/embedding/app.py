"""Embedding service process: builds the encoder from settings, warms it, serves it."""

from __future__ import annotations

import asyncio

from likeness.api.v1 import embedding_pb2, embedding_pb2_grpc
from likeness.core.image_loader import ImageLoader
from likeness.core.images import ImageLimits
from likeness.core.modelrepo import ModelRepository
from likeness.core.server import Service, run
from likeness.core.store import open_store
from likeness.embedding.clustering import ClusterParams, warm_up
from likeness.embedding.encoders.base import Encoder
from likeness.embedding.servicer import EmbeddingServicer
from likeness.embedding.settings import EmbeddingSettings

SERVICE_NAME = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name


def create_encoder(settings: EmbeddingSettings, store=None) -> Encoder:
    if settings.embedding_encoder == "classical":
        from likeness.embedding.encoders.classical import ClassicalEncoder

        return ClassicalEncoder()
    from likeness.embedding.encoders.openclip import OpenClipEncoder

    repository = ModelRepository.from_settings(settings, store)
    return OpenClipEncoder(repository, settings.embedding_open_clip_model, threads=settings.embedding_threads,
                           batch_size=settings.embedding_encoder_batch, device=settings.embedding_device,
                           dtype=settings.embedding_dtype)


def cluster_defaults(settings: EmbeddingSettings) -> ClusterParams:
    return ClusterParams(exact_limit=settings.embedding_exact_cluster_limit,
                         silhouette_sample=settings.embedding_silhouette_sample,
                         n_init=settings.embedding_kmeans_n_init)


def warm_up_cluster(threads: int) -> None:
    """Cluster's libraries loaded and run once, under the thread bound a request gets."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads or None):
        warm_up()


def create_service(settings: EmbeddingSettings | None = None, encoder: Encoder | None = None) -> Service:
    """`encoder` overrides the one built from settings (tests). Weights load in warm-up, so a
    missing model fails start-up (ModelMissing names the path) before the service is SERVING."""
    settings = settings or EmbeddingSettings()
    store = open_store(settings)
    encoder = encoder or create_encoder(settings, store)
    images = ImageLoader(store, ImageLimits.from_settings(settings))
    servicer = EmbeddingServicer(encoder, images, max_batch=settings.embedding_max_batch,
                                 score_scale=settings.embedding_score_scale,
                                 cluster_defaults=cluster_defaults(settings),
                                 compute_threads=settings.embedding_compute_threads)

    async def warmup() -> None:
        if settings.embedding_build_tiny and settings.embedding_encoder == "open_clip":
            from likeness.embedding.encoders.tiny_clip import NAME, ensure_tiny_clip

            if settings.embedding_open_clip_model == NAME:
                await asyncio.to_thread(ensure_tiny_clip, ModelRepository.from_settings(settings, store))
        await asyncio.to_thread(encoder.warmup)
        await asyncio.to_thread(warm_up_cluster, settings.embedding_compute_threads)

    async def shutdown() -> None:
        servicer.close()
        images.close()

    description = {"encoder_backend": settings.embedding_encoder, "text_tower": encoder.has_text,
                   "max_batch": settings.embedding_max_batch,
                   "compute_threads": settings.embedding_compute_threads}
    if settings.embedding_encoder == "open_clip":
        description.update(open_clip_model=settings.embedding_open_clip_model, device=encoder.device,
                           dtype=encoder.dtype_name)
    return Service(
        name="embedding",
        servicers=[(embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        warmup=warmup,
        shutdown=shutdown,
        description=description,
    )


def main() -> None:
    run(create_service, EmbeddingSettings())


if __name__ == "__main__":
    main()
