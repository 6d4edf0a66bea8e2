"""Cluster: K given or chosen by silhouette, per-item silhouettes, outliers, determinism, the
mini-batch path above the exact limit, and clear errors for impossible K."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, silhouette_samples

from likeness.core.errors import InvalidArgument
from likeness.embedding.clustering import ClusterParams, _sampled_silhouettes, cluster


def blobs(n: int, k: int, d: int = 32, spread: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    truth = rng.integers(0, k, n)
    return (centres[truth] + spread * rng.normal(size=(n, d))).astype(np.float32), truth


def test_given_k_recovers_planted_clusters_with_silhouettes_from_sklearn():
    x, truth = blobs(120, 4)
    result = cluster(x, ClusterParams(k=4, seed=3))
    assert result.k == 4 and result.algorithm == "kmeans"
    assert adjusted_rand_score(truth, result.labels) == pytest.approx(1.0)
    np.testing.assert_allclose(result.silhouettes, silhouette_samples(x, result.labels), atol=1e-5)
    assert result.mean_silhouette == pytest.approx(float(result.silhouettes.mean()))
    np.testing.assert_allclose(result.distances, np.linalg.norm(x - result.centroids[result.labels], axis=1),
                               rtol=1e-4)
    assert result.centroids.shape == (4, 32)


def test_automatic_k_picks_the_best_silhouette_over_the_range():
    x, truth = blobs(150, 5, seed=1)
    result = cluster(x, ClusterParams(k=0, k_min=2, k_max=9, seed=0))
    assert [k for k, _ in result.k_scores] == list(range(2, 10))
    assert result.k == 5 == max(result.k_scores, key=lambda ks: ks[1])[0]
    assert adjusted_rand_score(truth, result.labels) == pytest.approx(1.0)


def test_same_seed_same_clustering():
    x, _ = blobs(200, 6, spread=1.5, seed=2)  # overlapping: initialisation matters
    a = cluster(x, ClusterParams(k=6, seed=11))
    b = cluster(x, ClusterParams(k=6, seed=11))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_far_item_is_flagged_with_its_robust_z():
    x, _ = blobs(90, 3, spread=0.2)
    x[7] += 3.0  # pushed far from its cluster, yet still nearest to it
    result = cluster(x, ClusterParams(k=3, seed=0))
    assert result.outliers[7]
    assert result.outlier_reasons[7].startswith("robust z ") and "> 3.5" in result.outlier_reasons[7]
    assert result.outliers.sum() <= 3  # clean Gaussian members are rarely beyond 3.5 robust sigmas
    off = cluster(x, ClusterParams(k=3, seed=0, outlier_z=0, negative_silhouette_outliers=False))
    assert not off.outliers.any()


def test_negative_silhouette_flagged():
    x, _ = blobs(60, 2, spread=0.1)
    result = cluster(x, ClusterParams(k=2, seed=0, outlier_z=0))
    bridge = (result.centroids[0] * 0.45 + result.centroids[1] * 0.55)[None]  # between the clusters
    x2 = np.vstack([x, bridge]).astype(np.float32)
    result = cluster(x2, ClusterParams(k=2, seed=0, outlier_z=0))
    if result.silhouettes[-1] < 0:
        assert result.outliers[-1] and "negative silhouette" in result.outlier_reasons[-1]
    assert all(("negative silhouette" in r) == bool(s < 0) for r,
               s in zip(result.outlier_reasons, result.silhouettes, strict=True))


def test_sampled_silhouette_equals_exact_when_the_sample_is_everything():
    x, _ = blobs(80, 3, spread=0.8)
    labels = cluster(x, ClusterParams(k=3, seed=0)).labels
    np.testing.assert_allclose(_sampled_silhouettes(x, labels, 3, np.arange(80)),
                               silhouette_samples(x, labels), atol=1e-4)


def test_minibatch_path_above_the_exact_limit():
    x, truth = blobs(3000, 5, seed=4)
    result = cluster(x, ClusterParams(k=5, seed=0, exact_limit=1000, silhouette_sample=400))
    assert result.algorithm == "minibatch-kmeans"
    assert adjusted_rand_score(truth, result.labels) > 0.99
    exact = silhouette_samples(x, result.labels)
    assert abs(result.mean_silhouette - exact.mean()) < 0.02  # sampled estimate
    assert np.abs(result.silhouettes - exact).max() < 0.1


@pytest.mark.parametrize(("params", "field", "words"), [
    (ClusterParams(k=11), "k", "larger than allowed for 10 items"),
    (ClusterParams(k=1), "k", "below 2"),
    (ClusterParams(k=0, k_min=12, k_max=20), "k_min", "capped at N - 1 = 9"),
    (ClusterParams(k=0, k_min=1), "k_min", "below 2"),
])
def test_impossible_k_is_invalid_argument(params, field, words):
    x, _ = blobs(10, 2)
    with pytest.raises(InvalidArgument) as err:
        cluster(x, params)
    assert err.value.field == field and words in err.value.message


def test_k_above_distinct_vectors_is_named():
    x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 12 items, 3 distinct
    with pytest.raises(InvalidArgument, match="k: 4 clusters need at least 4 distinct vectors; items has 3"):
        cluster(x, ClusterParams(k=4))
    assert cluster(x, ClusterParams(k=0, k_max=8)).k == 3  # automatic K stays within what exists
