"""Quality measures and the combined score: exact values on synthetic images, and the ranking of
controlled degradations of real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from likeness.core.errors import InvalidArgument
from likeness.detection.faces import Box
from likeness.detection.quality import QualityWeights, combined_score, laplacian_variance, measure
from likeness.detection.validation import ValidationPolicy

POLICY, WEIGHTS = ValidationPolicy(), QualityWeights()


def test_measures_of_a_flat_image():
    grey = np.full((64, 64, 3), 100, np.uint8)
    m = measure(grey, None, 0.0)
    assert m.contrast == 0 and m.sharpness_image == 0 and m.brightness == pytest.approx(100)
    assert m.shadows_clipped == 0 and m.highlights_clipped == 0 and m.sharpness_face == 0


def test_measures_of_a_half_black_half_white_image():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 255
    m = measure(img, Box(0, 0, 16, 16), 0.9)
    assert m.brightness == pytest.approx(127.5) and m.contrast == pytest.approx(127.5)
    assert m.shadows_clipped == pytest.approx(0.5) and m.highlights_clipped == pytest.approx(0.5)
    assert m.sharpness_face == 0  # the face's square lies inside the flat black half
    assert m.sharpness_image > 0 and m.face_confidence == pytest.approx(0.9)


def test_laplacian_variance_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    g = grey.astype(np.float64)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    # OpenCV reflects at the border; compare the interior's variance within a few percent
    assert laplacian_variance(grey) == pytest.approx(lap.var(), rel=0.05)


@pytest.mark.parametrize("photo", ["astronaut", "group"])
def test_increasing_blur_scores_strictly_lower(pipeline, photo, request):
    image = request.getfixturevalue(photo)
    scores = [pipeline.assess(image if s == 0 else cv2.GaussianBlur(image, (0, 0), s), POLICY, WEIGHTS).score
              for s in (0, 0.5, 1, 2, 4, 8)]
    assert all(a > b for a, b in zip(scores[:-1], scores[1:], strict=True)), scores
    assert 0.0 <= scores[-1] < scores[0] <= 1.0


@pytest.mark.parametrize("photo", ["astronaut", "group"])
def test_lowered_contrast_scores_strictly_lower(pipeline, photo, request):
    image = request.getfixturevalue(photo)
    scores = [pipeline.assess(np.asarray(ImageEnhance.Contrast(Image.fromarray(image)).enhance(f)),
                              POLICY, WEIGHTS).score for f in (1.0, 0.8, 0.6, 0.4, 0.2, 0.1)]
    assert all(a > b for a, b in zip(scores[:-1], scores[1:], strict=True)), scores


def test_weights_change_the_score_and_are_validated(pipeline, astronaut):
    sharp_only = pipeline.assess(astronaut, POLICY, QualityWeights(1, 0, 0, 0))
    confidence_only = pipeline.assess(astronaut, POLICY, QualityWeights(0, 0, 0, 1))
    assert confidence_only.score == pytest.approx(confidence_only.faces[0].score)
    assert sharp_only.score != pytest.approx(confidence_only.score)
    with pytest.raises(InvalidArgument, match="weights.contrast"):
        QualityWeights(0.5, 1.5, 0, 0).checked()
    with pytest.raises(InvalidArgument, match="sum to 0"):
        QualityWeights(0, 0, 0, 0).checked()


def test_score_without_a_face_uses_image_sharpness(pipeline):
    from tests.photos import skimage_photo

    a = pipeline.assess(skimage_photo("coffee"), POLICY, WEIGHTS)
    assert a.quality.face_confidence == 0 and a.quality.sharpness_face == 0 and a.quality.sharpness_image > 0
    assert 0 < a.score < combined_score(a.quality.__class__(**{**a.quality.__dict__, "face_confidence": 1.0}))


def test_min_quality_rejects_an_accepted_image(pipeline, astronaut):
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 4)
    no_blur_gate = ValidationPolicy(min_sharpness=0)
    a = pipeline.assess(blurred, no_blur_gate, WEIGHTS, min_quality=0.55)
    assert not a.verdict.accepted and a.verdict.reason.value == "LOW_QUALITY"
    assert pipeline.assess(astronaut, POLICY, WEIGHTS, min_quality=0.55).verdict.accepted
    assert a.verdict.detail == f"quality score {a.score:.3f} < 0.55"  # the limit as set
