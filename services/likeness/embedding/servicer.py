"""gRPC face of the embedding service: protobuf <-> domain translation, nothing else."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from likeness.api.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc
from likeness.core import metrics, tracing
from likeness.core.convert import item_error_pb
from likeness.core.errors import InvalidArgument
from likeness.embedding.clustering import ClusterParams, cluster
from likeness.embedding.diversity import DiversityParams, Metric, diversity
from likeness.embedding.encoders.base import Encoder
from likeness.embedding.scoring import score_from_cosine
from likeness.embedding.selection import Candidate, Quota, select
from likeness.embedding.vectors import check_unique_ids, stack_vectors

MAX_TEXTS = 1024
MAX_CLUSTER_ITEMS = 1_000_000
METHODS = {embedding_pb2.SELECT_METHOD_UNSPECIFIED: "exact", embedding_pb2.SELECT_METHOD_EXACT: "exact",
           embedding_pb2.SELECT_METHOD_GREEDY: "greedy"}
METHOD_PB = {"exact": embedding_pb2.SELECT_METHOD_EXACT, "greedy": embedding_pb2.SELECT_METHOD_GREEDY}


def vector_pb(row: np.ndarray) -> common_pb2.Vector:
    return common_pb2.Vector(values=row.tolist())


def metric_pb(m: Metric | None) -> embedding_pb2.MetricValue | None:
    return None if m is None else embedding_pb2.MetricValue(value=m.value, ci_low=m.ci_low, ci_high=m.ci_high)


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, encoder: Encoder, images, *, max_batch: int, score_scale: float,
                 cluster_defaults: ClusterParams, compute_threads: int = 1):
        self._encoder, self._images = encoder, images
        self._max_batch, self._score_scale = max_batch, score_scale
        self._cluster_defaults = cluster_defaults
        self._compute_threads = compute_threads or None  # None: the libraries' default
        # one model worker: encoder inference is serialised; decoding runs on the loader's pool
        self._model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding-model")

    def close(self) -> None:
        self._model.shutdown(wait=False, cancel_futures=True)

    async def _on_model(self, fn, *args):
        return await tracing.run_on_worker(self._model, fn, *args)

    async def _compute(self, fn, *args):
        """Runs numeric domain work off the event loop with a bounded BLAS/OpenMP thread count."""
        from threadpoolctl import threadpool_limits

        def limited():
            with threadpool_limits(self._compute_threads):
                return fn(*args)

        return await asyncio.to_thread(limited)

    def _check_batch(self, n: int) -> None:
        if not 1 <= n <= self._max_batch:
            raise InvalidArgument("images", f"batch of {n} images; send 1 to {self._max_batch} "
                                            "(LIKENESS_EMBEDDING_MAX_BATCH)")

    async def _embed_loaded(self, request_images, method: str):
        loaded = await self._images.load_all(request_images, "images")
        if len(loaded) == 1 and loaded[0].error is not None:
            raise loaded[0].error  # house convention: a batch of one gets the error as its status
        ok = [item for item in loaded if item.ok]
        vectors = await self._on_model(self._encoder.embed_images, [item.pixels for item in ok]) if ok else None
        rows = {item.index: vectors[j] for j, item in enumerate(ok)}
        errors = [item_error_pb(item.index, item.error) for item in loaded if not item.ok]
        metrics.ITEMS.labels("embedding", method, "embedded").inc(len(ok))
        metrics.ITEMS.labels("embedding", method, "failed").inc(len(errors))
        return loaded, rows, errors

    async def EmbedImages(self, request, context):
        self._check_batch(len(request.images))
        loaded, rows, errors = await self._embed_loaded(request.images, "embed_images")
        empty = common_pb2.Vector()
        return embedding_pb2.EmbedImagesResponse(
            embeddings=[vector_pb(rows[i]) if i in rows else empty for i in range(len(loaded))],
            encoder=self._encoder.name, dimension=self._encoder.dimension, errors=errors,
            stand_in=self._encoder.stand_in, digest=self._encoder.digest)

    def _check_texts(self, texts, max_count: int) -> list[str]:
        if not self._encoder.has_text:
            raise self._encoder.no_text_tower()
        if not 1 <= len(texts) <= max_count:
            raise InvalidArgument("texts", f"has {len(texts)} texts; send 1 to {max_count}")
        return list(texts)

    async def EmbedTexts(self, request, context):
        texts = self._check_texts(request.texts, MAX_TEXTS)
        vectors = await self._on_model(self._encoder.embed_texts, texts)
        return embedding_pb2.EmbedTextsResponse(embeddings=[vector_pb(v) for v in vectors],
                                                encoder=self._encoder.name, dimension=self._encoder.dimension)

    async def Score(self, request, context):
        texts = self._check_texts(request.texts, self._max_batch)
        self._check_batch(len(request.images))
        if len(texts) not in (1, len(request.images)):
            raise InvalidArgument("texts", f"has {len(texts)} texts for {len(request.images)} images; "
                                           "give one text per image or a single text for all")
        text_vectors = await self._on_model(self._encoder.embed_texts, texts)
        loaded, rows, errors = await self._embed_loaded(request.images, "score")
        cosines = np.zeros(len(loaded), dtype=np.float64)  # 0 (score 0: rejected) for failed items
        for i, row in rows.items():
            cosines[i] = float(row @ text_vectors[i if len(texts) > 1 else 0])
        return embedding_pb2.ScoreResponse(cosine=cosines.tolist(),
                                           score=score_from_cosine(cosines, self._score_scale).tolist(),
                                           encoder=self._encoder.name, errors=errors,
                                           stand_in=self._encoder.stand_in, digest=self._encoder.digest)

    async def Cluster(self, request, context):
        items = request.items
        check_unique_ids([it.id for it in items], "items")
        x = stack_vectors([it.vector.values for it in items], "items", min_count=2,
                          max_count=MAX_CLUSTER_ITEMS, subfield=".vector")
        d = self._cluster_defaults
        params = ClusterParams(
            k=request.k, k_min=request.k_min or d.k_min, k_max=request.k_max or d.k_max, seed=request.seed,
            outlier_z=request.outlier_z if request.HasField("outlier_z") else d.outlier_z,
            negative_silhouette_outliers=(request.negative_silhouette_outliers
                                          if request.HasField("negative_silhouette_outliers")
                                          else d.negative_silhouette_outliers),
            exact_limit=d.exact_limit, silhouette_sample=d.silhouette_sample, n_init=d.n_init)
        if params.outlier_z < 0 or not np.isfinite(params.outlier_z):
            raise InvalidArgument("outlier_z", f"{params.outlier_z} must be >= 0 (0 disables distance outliers)")
        result = await self._compute(cluster, x, params)
        assignments = [
            embedding_pb2.ClusterAssignment(id=it.id, cluster=int(result.labels[i]),
                                            silhouette=float(result.silhouettes[i]),
                                            distance=float(result.distances[i]),
                                            outlier=bool(result.outliers[i]),
                                            outlier_reason=result.outlier_reasons[i])
            for i, it in enumerate(items)]
        return embedding_pb2.ClusterResponse(
            assignments=assignments, k=result.k, silhouette=result.mean_silhouette,
            centroids=[vector_pb(c) for c in result.centroids],
            k_scores=[embedding_pb2.KScore(k=k, silhouette=s) for k, s in result.k_scores],
            algorithm=result.algorithm)

    async def Select(self, request, context):
        if request.method not in METHODS:
            raise InvalidArgument("method", f"{request.method} is not a known SelectMethod")
        candidates = [Candidate(c.id, c.quality, dict(c.groups)) for c in request.candidates]
        quotas = [Quota(q.dimension, q.group, q.min, q.max) for q in request.quotas]
        result = await self._compute(select, candidates, request.count, quotas, METHODS[request.method])
        return embedding_pb2.SelectResponse(
            selected_ids=result.selected_ids, total_quality=result.total_quality,
            counts=[embedding_pb2.GroupCount(dimension=dim, group=g, count=n)
                    for (dim, g), n in result.counts.items()],
            method=METHOD_PB[result.method])

    async def Diversity(self, request, context):
        reference = stack_vectors([v.values for v in request.reference], "reference", min_count=2)
        generated = stack_vectors([v.values for v in request.generated], "generated", min_count=2)
        defaults = DiversityParams()
        params = DiversityParams(
            nearest_k=request.nearest_k or defaults.nearest_k,
            novelty_threshold=(request.novelty_threshold if request.HasField("novelty_threshold")
                               else defaults.novelty_threshold),
            bootstrap=request.bootstrap if request.HasField("bootstrap") else defaults.bootstrap,
            confidence=request.confidence if request.HasField("confidence") else defaults.confidence,
            seed=request.seed)
        poses = None
        if request.generated_poses:
            poses = np.array([[p.yaw, p.pitch, p.roll] for p in request.generated_poses], dtype=np.float64)
        report = await self._compute(diversity, reference, generated, params, poses)
        return embedding_pb2.DiversityResponse(
            novelty=metric_pb(report.novelty), precision=metric_pb(report.precision),
            recall=metric_pb(report.recall), density=metric_pb(report.density),
            coverage=metric_pb(report.coverage),
            mean_pairwise_similarity=metric_pb(report.mean_pairwise_similarity),
            yaw_std=metric_pb(report.yaw_std), pitch_std=metric_pb(report.pitch_std),
            roll_std=metric_pb(report.roll_std))
