"""gRPC face of the embedding service: protobuf <-> domain translation, nothing else."""

from __future__ import annotations

import asyncio

import numpy as np
from grpc.aio import ServicerContext

from likeness.api.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc
from likeness.core.batch import check_batch, raise_single
from likeness.core.convert import item_error_pb
from likeness.core.errors import InvalidArgument
from likeness.core.image_loader import ImageLoader
from likeness.core.worker import ModelWorker
from likeness.embedding import convert
from likeness.embedding.clustering import ClusterParams, cluster
from likeness.embedding.diversity import diversity
from likeness.embedding.encoders.base import Encoder
from likeness.embedding.scoring import score_from_cosine
from likeness.embedding.selection import select
from likeness.embedding.vectors import check_unique_ids, stack_vectors

MAX_TEXTS = 1024
MAX_CLUSTER_ITEMS = 1_000_000


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, encoder: Encoder, images: ImageLoader, *, max_batch: int, score_scale: float,
                 cluster_defaults: ClusterParams, compute_threads: int = 1):
        self._encoder, self._images = encoder, images
        self._max_batch, self._score_scale = max_batch, score_scale
        self._cluster_defaults = cluster_defaults
        self._compute_threads = compute_threads or None  # None: the libraries' default
        self._worker = ModelWorker("embedding")  # encoder inference is serialised; decoding is the loader's

    def close(self) -> None:
        self._worker.close()

    async def _compute(self, fn, *args):
        """Runs numeric domain work off the event loop with a bounded BLAS/OpenMP thread count."""
        from threadpoolctl import threadpool_limits

        def limited():
            with threadpool_limits(self._compute_threads):
                return fn(*args)

        return await asyncio.to_thread(limited)

    async def _embed_loaded(self, request_images, method: str):
        check_batch(len(request_images), self._max_batch, "images", "images", "LIKENESS_EMBEDDING_MAX_BATCH")
        loaded = await self._images.load_all(request_images, "images")
        raise_single([item.error for item in loaded])
        ok = [item for item in loaded if item.ok]
        vectors = await self._worker.run(self._encoder.embed_images, [item.pixels for item in ok]) if ok else None
        rows = {item.index: vectors[j] for j, item in enumerate(ok)}
        errors = [item_error_pb(item.index, item.error) for item in loaded if not item.ok]
        self._worker.count(method, "embedded", len(ok))
        self._worker.count(method, "failed", len(errors))
        return loaded, rows, errors

    async def EmbedImages(self, request: embedding_pb2.EmbedImagesRequest,
                          context: ServicerContext) -> embedding_pb2.EmbedImagesResponse:
        loaded, rows, errors = await self._embed_loaded(request.images, "embed_images")
        empty = common_pb2.Vector()
        return embedding_pb2.EmbedImagesResponse(
            embeddings=[convert.vector_pb(rows[i]) if i in rows else empty for i in range(len(loaded))],
            encoder=self._encoder.name, dimension=self._encoder.dimension, errors=errors,
            stand_in=self._encoder.stand_in, digest=self._encoder.digest)

    def _check_texts(self, texts, max_count: int) -> list[str]:
        if not self._encoder.has_text:
            raise self._encoder.no_text_tower()
        if not 1 <= len(texts) <= max_count:
            raise InvalidArgument("texts", f"has {len(texts)} texts; send 1 to {max_count}")
        return list(texts)

    async def EmbedTexts(self, request: embedding_pb2.EmbedTextsRequest,
                         context: ServicerContext) -> embedding_pb2.EmbedTextsResponse:
        texts = self._check_texts(request.texts, MAX_TEXTS)
        vectors = await self._worker.run(self._encoder.embed_texts, texts)
        return embedding_pb2.EmbedTextsResponse(embeddings=[convert.vector_pb(v) for v in vectors],
                                                encoder=self._encoder.name, dimension=self._encoder.dimension)

    async def Score(self, request: embedding_pb2.ScoreRequest, context: ServicerContext) -> embedding_pb2.ScoreResponse:
        texts = self._check_texts(request.texts, self._max_batch)
        check_batch(len(request.images), self._max_batch, "images", "images", "LIKENESS_EMBEDDING_MAX_BATCH")
        if len(texts) not in (1, len(request.images)):
            raise InvalidArgument("texts", f"has {len(texts)} texts for {len(request.images)} images; "
                                           "give one text per image or a single text for all")
        text_vectors = await self._worker.run(self._encoder.embed_texts, texts)
        loaded, rows, errors = await self._embed_loaded(request.images, "score")
        cosines = np.zeros(len(loaded), dtype=np.float64)  # 0 (score 0: rejected) for failed items
        for i, row in rows.items():
            cosines[i] = float(row @ text_vectors[i if len(texts) > 1 else 0])
        return embedding_pb2.ScoreResponse(cosine=cosines.tolist(),
                                           score=score_from_cosine(cosines, self._score_scale).tolist(),
                                           encoder=self._encoder.name, errors=errors,
                                           stand_in=self._encoder.stand_in, digest=self._encoder.digest)

    async def Cluster(self, request: embedding_pb2.ClusterRequest,
                      context: ServicerContext) -> embedding_pb2.ClusterResponse:
        check_unique_ids([it.id for it in request.items], "items")
        x = stack_vectors([it.vector.values for it in request.items], "items", min_count=2,
                          max_count=MAX_CLUSTER_ITEMS, subfield=".vector")
        params = convert.cluster_params(request, self._cluster_defaults)
        return convert.cluster_response(request.items, await self._compute(cluster, x, params))

    async def Select(self, request: embedding_pb2.SelectRequest,
                     context: ServicerContext) -> embedding_pb2.SelectResponse:
        candidates, quotas, method = convert.select_inputs(request)
        return convert.select_response(await self._compute(select, candidates, request.count, quotas, method))

    async def Diversity(self, request: embedding_pb2.DiversityRequest,
                        context: ServicerContext) -> embedding_pb2.DiversityResponse:
        reference = stack_vectors([v.values for v in request.reference], "reference", min_count=2)
        generated = stack_vectors([v.values for v in request.generated], "generated", min_count=2)
        report = await self._compute(diversity, reference, generated, convert.diversity_params(request),
                                     convert.poses_of(request))
        return convert.diversity_response(report)
