"""K-Means clustering with per-item silhouettes and outlier flags (seed doc 000, stage 4).

- K is given, or chosen by the best mean silhouette over [k_min, k_max].
- Up to `exact_limit` items: Lloyd K-Means (scikit-learn) and exact silhouettes. Above it:
  mini-batch K-Means, and each item's silhouette is estimated against a fixed random reference
  sample of `silhouette_sample` items (exact silhouettes are O(N^2): 10^10 distances at 100,000).
- Outliers: the modified z-score of Iglewicz and Hoaglin (0.6745 (d - median) / MAD) of an item's
  distance to its centroid, within its cluster, above `outlier_z` (their recommended 3.5), with the
  MAD of all clusters pooled as a floor of the spread (a cluster of near-duplicates has MAD ~ 0,
  which would flag any member that differs at all); and,
  optionally, a negative silhouette (the item is closer, on average, to another cluster).
- Deterministic: the same vectors and seed give the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from likeness.core.errors import InvalidArgument

MAD_TO_SIGMA = 0.6745  # MAD of a normal distribution is 0.6745 sigma
CHUNK_ELEMENTS = 1 << 22  # distances held at once when computing silhouettes (32 MiB as float64)


@dataclass(frozen=True)
class ClusterParams:
    k: int = 0  # 0 = choose by silhouette over [k_min, k_max]
    k_min: int = 2
    k_max: int = 12
    seed: int = 0
    outlier_z: float = 3.5  # 0 disables distance outliers
    negative_silhouette_outliers: bool = True
    exact_limit: int = 10_000  # above: mini-batch K-Means and sampled silhouettes
    silhouette_sample: int = 1_000
    n_init: int = 4


@dataclass
class Clustering:
    labels: np.ndarray  # (n,) int, in [0, k)
    k: int
    silhouettes: np.ndarray  # (n,)
    mean_silhouette: float
    distances: np.ndarray  # (n,) Euclidean distance to the own centroid
    outliers: np.ndarray  # (n,) bool
    outlier_reasons: list[str]
    centroids: np.ndarray  # (k, d)
    algorithm: str  # kmeans | minibatch-kmeans
    k_scores: list[tuple[int, float]] = field(default_factory=list)


def cluster(x: np.ndarray, params: ClusterParams) -> Clustering:
    """Clusters the rows of `x` (finite, validated by the caller: see vectors.stack_vectors)."""
    n = len(x)
    ks = _candidate_ks(n, params)
    distinct = _distinct_rows(x)
    if max(ks) > distinct and params.k:
        raise InvalidArgument("k", f"{params.k} clusters need at least {params.k} distinct vectors; "
                                   f"items has {distinct}")
    ks = [k for k in ks if k <= distinct]
    if not ks:
        raise InvalidArgument("items", f"has only {distinct} distinct vectors; at least 2 needed to cluster")
    x = np.ascontiguousarray(x, dtype=np.float32)
    large = n > params.exact_limit
    rng = np.random.default_rng(params.seed)
    reference = np.sort(rng.choice(n, min(n, params.silhouette_sample), replace=False)) if large else None

    k_scores: list[tuple[int, float]] = []
    if len(ks) == 1:
        best_k, (labels, centroids) = ks[0], _kmeans(x, ks[0], params, large)
    else:
        best = None
        for k in ks:
            labels_k, centroids_k = _kmeans(x, k, params, large)
            # choosing K on the reference sample keeps automatic K linear in N
            score = _mean_silhouette(x, labels_k, k, reference)
            k_scores.append((k, score))
            if best is None or score > best[0] + 1e-12:
                best = (score, k, labels_k, centroids_k)
        _, best_k, labels, centroids = best
    silhouettes = (_sampled_silhouettes(x, labels, best_k, reference) if large
                   else _exact_silhouettes(x, labels, best_k))
    diff = x - centroids[labels]
    distances = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    outliers, reasons = _outliers(labels, best_k, distances, silhouettes, params)
    return Clustering(labels=labels, k=best_k, silhouettes=silhouettes,
                      mean_silhouette=float(silhouettes.mean()), distances=distances,
                      outliers=outliers, outlier_reasons=reasons, centroids=centroids,
                      algorithm="minibatch-kmeans" if large else "kmeans", k_scores=k_scores)


def warm_up() -> None:
    """Clusters a small fixed set once: scikit-learn's import (a few CPU seconds on a busy core when
    the bytecode is not cached) and its first fit happen at start-up, not in a job's first Cluster."""
    rows = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
    cluster(rows, ClusterParams(k=0, k_max=3, n_init=1))


def _candidate_ks(n: int, p: ClusterParams) -> list[int]:
    if p.k:
        if p.k < 2:
            raise InvalidArgument("k", f"{p.k} is below 2; use 0 to choose K automatically")
        if p.k > n - 1:
            raise InvalidArgument("k", f"{p.k} is larger than allowed for {n} items (at most N - 1 = {n - 1}, "
                                       "the largest K with a defined silhouette)")
        return [p.k]
    if p.k_min < 2:
        raise InvalidArgument("k_min", f"{p.k_min} is below 2")
    k_max = min(p.k_max, n - 1)
    if p.k_min > k_max:
        raise InvalidArgument("k_min", f"{p.k_min} is above k_max {p.k_max} capped at N - 1 = {n - 1}")
    return list(range(p.k_min, k_max + 1))


def _distinct_rows(x: np.ndarray) -> int:
    """Distinct rows, counted on a random 1-d projection: equal rows project equally, and distinct
    rows collide with probability 0; O(N d) with no copy of the matrix (np.unique of rows sorts it)."""
    direction = np.random.default_rng(0).standard_normal(x.shape[1])
    projection = np.concatenate([x[i:i + 65536].astype(np.float64) @ direction for i in range(0, len(x), 65536)])
    return len(np.unique(projection))


def _kmeans(x: np.ndarray, k: int, p: ClusterParams, large: bool) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if large:
        model = MiniBatchKMeans(n_clusters=k, random_state=p.seed, n_init=3, batch_size=4096,
                                max_no_improvement=10)
    else:
        model = KMeans(n_clusters=k, random_state=p.seed, n_init=p.n_init)
    labels = model.fit_predict(x).astype(np.int64)
    return labels, model.cluster_centers_.astype(np.float32)


def _exact_silhouettes(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The exact silhouettes (scikit-learn's definition) in float64, via the same per-cluster
    distance sums as the estimate: one GEMM per row chunk instead of scikit-learn's generic
    chunked reduction (~20x faster at 250 items)."""
    return _sampled_silhouettes(x.astype(np.float64), labels, k, np.arange(len(x)))


def _mean_silhouette(x: np.ndarray, labels: np.ndarray, k: int, reference: np.ndarray | None) -> float:
    if reference is None:
        return float(_exact_silhouettes(x, labels, k).mean())
    ref_labels = labels[reference]
    present = np.unique(ref_labels)
    if len(present) < 2:
        return -1.0
    # silhouettes of the sample among itself: the K-selection score stays O(sample^2)
    remap = np.searchsorted(present, ref_labels)
    return float(_exact_silhouettes(x[reference], remap, len(present)).mean())


def _sampled_silhouettes(x: np.ndarray, labels: np.ndarray, k: int, reference: np.ndarray) -> np.ndarray:
    """Silhouette of every item with a and b measured against the reference items only: an
    unbiased estimate of each mean distance (exact when the reference is every item). An item in
    the reference does not count itself."""
    ref = x[reference]
    ref_sq = np.einsum("ij,ij->i", ref, ref)
    onehot = np.zeros((len(reference), k), dtype=x.dtype)
    onehot[np.arange(len(reference)), labels[reference]] = 1.0
    counts = onehot.sum(axis=0)
    in_ref = np.zeros(len(x), dtype=bool)
    in_ref[reference] = True
    out = np.empty(len(x), dtype=np.float32)
    chunk = max(1, CHUNK_ELEMENTS // len(reference))
    for start in range(0, len(x), chunk):
        xs = x[start:start + chunk]
        d2 = np.einsum("ij,ij->i", xs, xs)[:, None] + ref_sq[None, :] - 2.0 * (xs @ ref.T)
        sums = np.sqrt(np.maximum(d2, 0.0)) @ onehot  # (chunk, k) summed distances per cluster
        own = labels[start:start + chunk]
        rows = np.arange(len(xs))
        n_own = counts[own] - in_ref[start:start + chunk]  # self distance is 0 but not a neighbour
        a = sums[rows, own] / np.maximum(n_own, 1)
        means = sums / np.maximum(counts, 1)[None, :]
        means[:, counts == 0] = np.inf
        means[rows, own] = np.inf
        b = means.min(axis=1)
        s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
        s[n_own < 1] = 0.0  # a singleton's silhouette is 0 by convention
        out[start:start + chunk] = s
    return out


def _outliers(labels: np.ndarray, k: int, distances: np.ndarray, silhouettes: np.ndarray,
              p: ClusterParams) -> tuple[np.ndarray, list[str]]:
    reasons = [""] * len(labels)
    flags = np.zeros(len(labels), dtype=bool)
    if p.outlier_z > 0:
        medians = np.zeros(k)
        for c in range(k):
            members = labels == c
            if members.any():
                medians[c] = np.median(distances[members])
        deviation = np.abs(distances - medians[labels])
        pooled_mad = float(np.median(deviation))
        for c in range(k):
            members = np.flatnonzero(labels == c)
            if len(members) < 3:
                continue
            # a cluster of near-duplicates has a MAD near 0 that would flag any member; the
            # pooled MAD of all clusters is the floor of the spread
            mad = max(float(np.median(deviation[members])), pooled_mad)
            if mad <= 1e-12:
                continue
            z = MAD_TO_SIGMA * (distances[members] - medians[c]) / mad
            for i, zi in zip(members, z, strict=True):
                if zi > p.outlier_z:
                    flags[i] = True
                    reasons[i] = f"robust z {zi:.2f} > {p.outlier_z:g}"
    if p.negative_silhouette_outliers:
        for i in np.flatnonzero(silhouettes < 0):
            flags[i] = True
            text = f"negative silhouette {silhouettes[i]:.3f}"
            reasons[i] = f"{reasons[i]}; {text}" if reasons[i] else text
    return flags, reasons
