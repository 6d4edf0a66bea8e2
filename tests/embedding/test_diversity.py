"""Diversity: precision/recall/density/coverage equal the reference implementation (`prdc`) to
1e-6, the other metrics equal brute-force definitions, bootstrap intervals behave, bad input named."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from prdc import compute_prdc

from likeness.core.errors import InvalidArgument
from likeness.embedding import diversity as div
from likeness.embedding.diversity import DiversityParams, diversity


def reference_prdc(real, fake, k):
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        return compute_prdc(real, fake, k)


@pytest.mark.parametrize(("n", "m", "d", "k", "shift"), [
    (200, 300, 16, 5, 0.0), (300, 150, 64, 3, 0.5), (120, 120, 8, 10, 1.0), (400, 250, 32, 5, 0.2),
])
def test_prdc_equals_the_reference_implementation(n, m, d, k, shift):
    rng = np.random.default_rng(n + m + k)
    real = rng.normal(size=(n, d)).astype(np.float32)
    fake = (rng.normal(size=(m, d)) * 1.1 + shift).astype(np.float32)
    expected = reference_prdc(real, fake, k)
    got = diversity(real, fake, DiversityParams(nearest_k=k, bootstrap=0))
    for name in ("precision", "recall", "density", "coverage"):
        assert abs(getattr(got, name).value - expected[name]) <= 1e-6, name


def test_chunked_distances_give_the_same_answer(monkeypatch):
    rng = np.random.default_rng(9)
    real, fake = rng.normal(size=(150, 12)), rng.normal(size=(170, 12)) + 0.3
    whole = diversity(real, fake, DiversityParams(bootstrap=0))
    monkeypatch.setattr(div, "CHUNK_ELEMENTS", 1000)  # a few rows per chunk
    chunked = diversity(real, fake, DiversityParams(bootstrap=0))
    assert whole == chunked


def test_novelty_and_pairwise_similarity_match_brute_force():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(50, 6)), rng.normal(size=(40, 6))
    got = diversity(real, fake, DiversityParams(novelty_threshold=0.4, bootstrap=0, nearest_k=3))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = unit(fake) @ unit(real).T
    assert got.novelty.value == pytest.approx(np.mean((1 - cos).min(axis=1) > 0.4))
    sim = unit(fake) @ unit(fake).T
    assert got.mean_pairwise_similarity.value == pytest.approx(sim[~np.eye(40, dtype=bool)].mean())


def test_identical_sets_are_not_novel_and_fully_covered():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 8))
    got = diversity(x, x.copy(), DiversityParams(bootstrap=0))
    assert got.novelty.value == 0.0 and got.precision.value == 1.0 and got.coverage.value == 1.0


def test_pose_spread_and_bootstrap_intervals():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(80, 8)), rng.normal(size=(80, 8))
    poses = np.column_stack([rng.normal(0, 20, 80), rng.normal(0, 5, 80), rng.normal(0, 2, 80)])
    params = DiversityParams(bootstrap=200, seed=7)
    got = diversity(real, fake, params, poses)
    assert got.yaw_std.value == pytest.approx(poses[:, 0].std())
    for metric in (got.precision, got.recall, got.density, got.coverage, got.novelty,
                   got.mean_pairwise_similarity, got.yaw_std, got.pitch_std, got.roll_std):
        assert metric.ci_low <= metric.value <= metric.ci_high or metric.ci_low == metric.ci_high
    assert got.yaw_std.ci_high - got.yaw_std.ci_low > got.roll_std.ci_high - got.roll_std.ci_low
    assert diversity(real, fake, params, poses) == got  # same seed, same intervals
    narrow = diversity(real, fake, DiversityParams(bootstrap=200, seed=7, confidence=0.5), poses)
    assert narrow.yaw_std.ci_high - narrow.yaw_std.ci_low < got.yaw_std.ci_high - got.yaw_std.ci_low
    assert diversity(real, fake, DiversityParams(bootstrap=0)).yaw_std is None


@pytest.mark.parametrize(("params", "sizes", "field", "words"), [
    (DiversityParams(nearest_k=10), (10, 20), "nearest_k", "must be in [1, 9]"),
    (DiversityParams(nearest_k=0), (10, 20), "nearest_k", "must be in [1, 9]"),
    (DiversityParams(bootstrap=1001), (10, 20), "bootstrap", "outside [0, 1000]"),
    (DiversityParams(confidence=1.0), (10, 20), "confidence", "outside (0, 1)"),
    (DiversityParams(novelty_threshold=-0.1), (10, 20), "novelty_threshold", "outside [0, 2]"),
    (DiversityParams(nearest_k=1), (1, 20), "reference", "between 2 and 100,000 required"),
])
def test_bad_parameters(params, sizes, field, words):
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidArgument) as err:
        diversity(rng.normal(size=(sizes[0], 4)), rng.normal(size=(sizes[1], 4)), params)
    assert err.value.field == field and words in err.value.message


def test_mismatched_dimensions_and_poses():
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidArgument, match="generated: dimension 5 differs from the reference dimension 4"):
        diversity(rng.normal(size=(10, 4)), rng.normal(size=(10, 5)), DiversityParams())
    with pytest.raises(InvalidArgument, match="generated_poses: has 1 poses; give none, or 2 to 100,000"):
        diversity(rng.normal(size=(10, 4)), rng.normal(size=(10, 4)), DiversityParams(), np.zeros((1, 3)))
    with pytest.raises(InvalidArgument, match="generated_poses: contains a value that is not finite"):
        diversity(rng.normal(size=(10, 4)), rng.normal(size=(10, 4)), DiversityParams(), np.full((3, 3), np.nan))
    # fewer poses than vectors is fine: images without one clear face have none
    got = diversity(rng.normal(size=(10, 4)), rng.normal(size=(10, 4)), DiversityParams(), np.eye(3) * 10)
    assert got.yaw_std.value == pytest.approx(np.std([10, 0, 0]))


def test_novelty_of_unit_vectors_uses_the_euclidean_pass_and_agrees():
    rng = np.random.default_rng(4)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    real, fake = unit(rng.normal(size=(70, 5))), unit(rng.normal(size=(60, 5)))
    values = []
    for threshold in (0.01, 0.05, 0.2):
        got = diversity(real, fake, DiversityParams(novelty_threshold=threshold, bootstrap=0))
        cos = fake @ real.T
        assert got.novelty.value == pytest.approx(np.mean((1 - cos).min(axis=1) > threshold))
        values.append(got.novelty.value)
    assert any(0 < v < 1 for v in values)  # the thresholds split the set: the comparison is exercised
