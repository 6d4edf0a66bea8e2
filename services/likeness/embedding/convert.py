"""Protobuf <-> domain conversion of the embedding service."""

from __future__ import annotations

import numpy as np

from likeness.api.v1 import common_pb2, embedding_pb2
from likeness.core.errors import InvalidArgument
from likeness.embedding.clustering import Clustering, ClusterParams
from likeness.embedding.diversity import DiversityParams, DiversityReport, Metric
from likeness.embedding.selection import Candidate, Quota, Selection

METHODS = {embedding_pb2.SELECT_METHOD_UNSPECIFIED: "exact", embedding_pb2.SELECT_METHOD_EXACT: "exact",
           embedding_pb2.SELECT_METHOD_GREEDY: "greedy"}
METHOD_PB = {"exact": embedding_pb2.SELECT_METHOD_EXACT, "greedy": embedding_pb2.SELECT_METHOD_GREEDY}
DIVERSITY_METRICS = ("novelty", "precision", "recall", "density", "coverage", "mean_pairwise_similarity",
                     "yaw_std", "pitch_std", "roll_std")


def vector_pb(row: np.ndarray) -> common_pb2.Vector:
    return common_pb2.Vector(values=row.tolist())


def metric_pb(m: Metric | None) -> embedding_pb2.MetricValue | None:
    return None if m is None else embedding_pb2.MetricValue(value=m.value, ci_low=m.ci_low, ci_high=m.ci_high)


def _set_or(request, name: str, default):
    return getattr(request, name) if request.HasField(name) else default


def cluster_params(request: embedding_pb2.ClusterRequest, d: ClusterParams) -> ClusterParams:
    """The request's parameters over the service defaults `d` (0 or unset takes the default)."""
    params = ClusterParams(
        k=request.k, k_min=request.k_min or d.k_min, k_max=request.k_max or d.k_max, seed=request.seed,
        outlier_z=_set_or(request, "outlier_z", d.outlier_z),
        negative_silhouette_outliers=_set_or(request, "negative_silhouette_outliers", d.negative_silhouette_outliers),
        exact_limit=d.exact_limit, silhouette_sample=d.silhouette_sample, n_init=d.n_init)
    if params.outlier_z < 0 or not np.isfinite(params.outlier_z):
        raise InvalidArgument("outlier_z", f"{params.outlier_z} must be >= 0 (0 disables distance outliers)")
    return params


def cluster_response(items, result: Clustering) -> embedding_pb2.ClusterResponse:
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


def select_inputs(request: embedding_pb2.SelectRequest) -> tuple[list[Candidate], list[Quota], str]:
    if request.method not in METHODS:
        raise InvalidArgument("method", f"{request.method} is not a known SelectMethod")
    candidates = [Candidate(c.id, c.quality, dict(c.groups)) for c in request.candidates]
    quotas = [Quota(q.dimension, q.group, q.min, q.max) for q in request.quotas]
    return candidates, quotas, METHODS[request.method]


def select_response(result: Selection) -> embedding_pb2.SelectResponse:
    return embedding_pb2.SelectResponse(
        selected_ids=result.selected_ids, total_quality=result.total_quality,
        counts=[embedding_pb2.GroupCount(dimension=dim, group=g, count=n) for (dim, g), n in result.counts.items()],
        method=METHOD_PB[result.method])


def diversity_params(request: embedding_pb2.DiversityRequest) -> DiversityParams:
    defaults = DiversityParams()
    return DiversityParams(
        nearest_k=request.nearest_k or defaults.nearest_k,
        novelty_threshold=_set_or(request, "novelty_threshold", defaults.novelty_threshold),
        bootstrap=_set_or(request, "bootstrap", defaults.bootstrap),
        confidence=_set_or(request, "confidence", defaults.confidence), seed=request.seed)


def poses_of(request: embedding_pb2.DiversityRequest) -> np.ndarray | None:
    if not request.generated_poses:
        return None
    return np.array([[p.yaw, p.pitch, p.roll] for p in request.generated_poses], dtype=np.float64)


def diversity_response(report: DiversityReport) -> embedding_pb2.DiversityResponse:
    return embedding_pb2.DiversityResponse(**{name: metric_pb(getattr(report, name)) for name in DIVERSITY_METRICS})
