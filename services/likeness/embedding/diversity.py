"""Diversity of a generated set against a reference set.

- precision, recall, density, coverage: Naeem et al. 2020, "Reliable Fidelity and Diversity
  Metrics for Generative Models", k-nearest-neighbour manifolds in Euclidean distance, computed as
  the reference implementation (`prdc.compute_prdc`) does, but in chunks so memory stays
  O(chunk x N) instead of O(N^2).
- novelty: share of generated items whose cosine distance to every reference item exceeds the
  threshold (their most similar reference item has cosine similarity below 1 - threshold).
- mean pairwise cosine similarity within the generated set (lower = more diverse).
- pose spread: standard deviations of yaw, pitch and roll in degrees (population std, ddof=0).

Confidence intervals are percentile bootstraps. Each k-NN metric is a mean of per-item
indicators (precision, density, novelty over generated items; recall, coverage over reference
items) with the k-NN radii held fixed: the bootstrap resamples the items being judged, not the
manifolds (recomputing k-NN radii on a resample with duplicates collapses them to 0). Mean
pairwise similarity and pose spreads are recomputed exactly on each resample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from likeness.core.errors import InvalidArgument
from likeness.embedding.vectors import l2_normalise

MAX_SET = 100_000
MAX_BOOTSTRAP = 1_000
CHUNK_ELEMENTS = 1 << 24  # distances held at once (128 MiB as float64)


@dataclass(frozen=True)
class DiversityParams:
    nearest_k: int = 5
    novelty_threshold: float = 0.3
    bootstrap: int = 100
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Metric:
    value: float
    ci_low: float
    ci_high: float


@dataclass
class DiversityReport:
    novelty: Metric
    precision: Metric
    recall: Metric
    density: Metric
    coverage: Metric
    mean_pairwise_similarity: Metric
    yaw_std: Metric | None = None
    pitch_std: Metric | None = None
    roll_std: Metric | None = None


def diversity(reference: np.ndarray, generated: np.ndarray, params: DiversityParams,
              poses: np.ndarray | None = None) -> DiversityReport:
    """`reference` (n, d) and `generated` (m, d), finite (see vectors.stack_vectors); `poses`
    (p, 3) yaw, pitch, roll in degrees of the generated set's faces (p need not be m), or None."""
    _validate(reference, generated, params, poses)
    per_item = _per_item(reference, generated, params)
    rng = np.random.default_rng(params.seed)
    fake_draws = _draws(rng, len(generated), params.bootstrap)
    real_draws = _draws(rng, len(reference), params.bootstrap)

    def mean_metric(name: str, draws: np.ndarray | None) -> Metric:
        values = per_item[name]
        boot = None if draws is None else draws @ values / len(values)
        return _metric(float(values.mean()), boot, params.confidence)

    report = DiversityReport(
        novelty=mean_metric("novelty", fake_draws),
        precision=mean_metric("precision", fake_draws),
        recall=mean_metric("recall", real_draws),
        density=mean_metric("density", fake_draws),
        coverage=mean_metric("coverage", real_draws),
        mean_pairwise_similarity=_pairwise_similarity(generated, fake_draws, params.confidence),
    )
    if poses is not None:
        # poses need not align with the vectors (an image without one clear face has no pose):
        # they are resampled on their own
        pose_draws = _draws(rng, len(poses), params.bootstrap)
        for axis, name in enumerate(("yaw_std", "pitch_std", "roll_std")):
            setattr(report, name, _std(poses[:, axis].astype(np.float64), pose_draws, params.confidence))
    return report


def _per_item(reference: np.ndarray, generated: np.ndarray, params: DiversityParams) -> dict[str, np.ndarray]:
    """Per-item indicators whose means are the metrics: precision, density and novelty per generated
    item, recall and coverage per reference item."""
    real = reference.astype(np.float64)
    fake = generated.astype(np.float64)
    k = params.nearest_k
    real_radii = knn_radii(real, k)
    fake_radii = knn_radii(fake, k)
    # per-item indicators, one pass over real x fake distances in row chunks
    inside_count = np.zeros(len(fake))  # reference balls that contain each generated item
    recalled = np.zeros(len(real), dtype=bool)  # a generated ball contains this reference item
    nearest_fake = np.full(len(real), np.inf)
    nearest_real = np.full(len(fake), np.inf)  # Euclidean distance of each generated item to the reference
    for start, d in _distance_chunks(real, fake):
        radii = real_radii[start:start + len(d), None]
        inside_count += (d < radii).sum(axis=0)
        recalled[start:start + len(d)] = (d < fake_radii[None, :]).any(axis=1)
        nearest_fake[start:start + len(d)] = d.min(axis=1)
        np.minimum(nearest_real, d.min(axis=0), out=nearest_real)
    if _unit_rows(real) and _unit_rows(fake):
        # unit vectors (every encoder's output): cosine distance = |a - b|^2 / 2, no second pass
        novel = np.square(nearest_real) / 2.0 > params.novelty_threshold
    else:
        novel = _novel(reference, generated, params.novelty_threshold)
    return {
        "precision": (inside_count > 0).astype(np.float64),
        "density": inside_count / k,
        "recall": recalled.astype(np.float64),
        "coverage": (nearest_fake < real_radii).astype(np.float64),
        "novelty": novel.astype(np.float64),
    }


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (prdc: the (k+1)-th smallest distance
    in the row, counting the zero distance to itself)."""
    out = np.empty(len(x))
    for start, d in _distance_chunks(x, x):
        out[start:start + len(d)] = np.partition(d, k, axis=1)[:, k]
    return out


def _distance_chunks(a: np.ndarray, b: np.ndarray):
    """Yields (row offset, Euclidean distances of a chunk of `a` rows to all of `b`), computed by
    scikit-learn's `euclidean_distances`, the routine the reference implementation uses."""
    from sklearn.metrics.pairwise import euclidean_distances

    rows = max(1, CHUNK_ELEMENTS // max(len(b), 1))
    b_sq = np.einsum("ij,ij->i", b, b)[None, :]
    for start in range(0, len(a), rows):
        yield start, euclidean_distances(a[start:start + rows], b, Y_norm_squared=b_sq)


def _unit_rows(x: np.ndarray) -> bool:
    return bool(np.all(np.abs(np.einsum("ij,ij->i", x, x) - 1.0) < 1e-5))


def _novel(reference: np.ndarray, generated: np.ndarray, threshold: float) -> np.ndarray:
    ref = l2_normalise(reference.astype(np.float32))
    gen = l2_normalise(generated.astype(np.float32))
    best = np.full(len(gen), -np.inf, dtype=np.float32)
    rows = max(1, CHUNK_ELEMENTS // len(ref))
    for start in range(0, len(gen), rows):
        best[start:start + rows] = (gen[start:start + rows] @ ref.T).max(axis=1)
    return (1.0 - best) > threshold


def _pairwise_similarity(generated: np.ndarray, draws: np.ndarray | None, confidence: float) -> Metric:
    """Mean cosine similarity over pairs of distinct items, in O(m d): with unit vectors u_i and
    multiplicities w_i (all 1, or a resample's), sum_{i != j} w_i w_j u_i.u_j / sum_{i != j} w_i w_j
    = (|sum w_i u_i|^2 - sum w_i^2) / ((sum w_i)^2 - sum w_i^2). Copies of one item drawn twice by
    the bootstrap are not a pair (their similarity, 1, would bias the resamples upwards)."""
    u = l2_normalise(generated.astype(np.float64))
    m = len(u)
    value = (float(np.square(u.sum(axis=0)).sum()) - m) / (m * (m - 1))
    boot = None
    if draws is not None:
        sums = draws @ u  # (B, d)
        self_pairs = np.square(draws).sum(axis=1)
        boot = (np.square(sums).sum(axis=1) - self_pairs) / (m * m - self_pairs)
    return _metric(value, boot, confidence)


def _std(values: np.ndarray, draws: np.ndarray | None, confidence: float) -> Metric:
    boot = None
    if draws is not None:
        m = len(values)
        mean = draws @ values / m
        boot = np.sqrt(np.maximum(draws @ np.square(values) / m - np.square(mean), 0.0))
    return _metric(float(values.std()), boot, confidence)


def _draws(rng: np.random.Generator, n: int, b: int) -> np.ndarray | None:
    """(b, n) multiplicities of b bootstrap resamples of n items, or None when b is 0."""
    if b == 0:
        return None
    return rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)


def _metric(value: float, boot: np.ndarray | None, confidence: float) -> Metric:
    if boot is None:
        return Metric(value, value, value)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return Metric(value, float(low), float(high))


def _validate(reference: np.ndarray, generated: np.ndarray, p: DiversityParams, poses: np.ndarray | None) -> None:
    for name, x in (("reference", reference), ("generated", generated)):
        if not 2 <= len(x) <= MAX_SET:
            raise InvalidArgument(name, f"has {len(x)} vectors; between 2 and {MAX_SET:,} required")
    if reference.shape[1] != generated.shape[1]:
        raise InvalidArgument("generated", f"dimension {generated.shape[1]} differs from the reference "
                                           f"dimension {reference.shape[1]}")
    smallest = min(len(reference), len(generated))
    if not 1 <= p.nearest_k < smallest:
        raise InvalidArgument("nearest_k", f"{p.nearest_k} must be in [1, {smallest - 1}] (below the size of "
                                           f"the smaller set, {smallest})")
    if not 0.0 <= p.novelty_threshold <= 2.0:
        raise InvalidArgument("novelty_threshold", f"{p.novelty_threshold} is outside [0, 2] (cosine distance)")
    if not 0 <= p.bootstrap <= MAX_BOOTSTRAP:
        raise InvalidArgument("bootstrap", f"{p.bootstrap} is outside [0, {MAX_BOOTSTRAP}]")
    if not 0.0 < p.confidence < 1.0:
        raise InvalidArgument("confidence", f"{p.confidence} is outside (0, 1)")
    if poses is not None:
        if not 2 <= len(poses) <= MAX_SET:
            raise InvalidArgument("generated_poses", f"has {len(poses)} poses; give none, or 2 to {MAX_SET:,}")
        if not np.isfinite(poses).all():
            raise InvalidArgument("generated_poses", "contains a value that is not finite")
