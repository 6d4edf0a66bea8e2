"""Near-duplicate removal of curation: perceptual hash confirmed by embeddings, mirrors by policy,
the better-scored image kept and named; and the curate policy's eye gate default."""

from __future__ import annotations

import numpy as np

from likeness.api.v1 import detection_pb2, orchestrator_pb2
from likeness.core.images import encode_png
from likeness.embedding.encoders.classical import ClassicalEncoder
from likeness.orchestrator.demo_set import Portrait, brightness, greyscale, mirrored, rotated
from likeness.orchestrator.workflows.curate import CURATE_MIN_EYE_OPENNESS, curate_policy
from likeness.orchestrator.workflows.duplicates import find_duplicates, image_hashes

ASTRONAUT = Portrait("astronaut", "skimage:astronaut", (174, 69, 106))


def _inputs(images: dict[str, np.ndarray]):
    ids = list(images)
    hashes = [image_hashes(encode_png(images[i])) for i in ids]
    vectors = list(ClassicalEncoder().embed_images([images[i] for i in ids]))
    return ids, hashes, vectors


def test_copies_are_removed_naming_the_better_scored_one_they_duplicate():
    portrait = ASTRONAUT.crop(2.8, 320)
    images = {"portrait": portrait, "mirror": mirrored(portrait), "grey": greyscale(portrait),
              "brighter": brightness(portrait, 1.2), "close_up": ASTRONAUT.crop(2.2, 320),
              "tilted": rotated(portrait, 10)}
    ids, hashes, vectors = _inputs(images)
    quality = {"portrait": 0.60, "mirror": 0.60, "grey": 0.61, "brighter": 0.59, "close_up": 0.62, "tilted": 0.58}
    found = {d.id: d for d in find_duplicates(ids, [quality[i] for i in ids], hashes, vectors)}
    # the grey copy scores best of the four copies of one picture: it is kept, the others name it
    assert set(found) == {"portrait", "mirror", "brighter"}
    assert all(d.of == "grey" for d in found.values())
    assert found["mirror"].mirrored and "mirror image of grey" in found["mirror"].detail()
    # mirrors distinct by policy: the mirror stays (the other copies still go)
    kept_mirror = find_duplicates(ids, [quality[i] for i in ids], hashes, vectors, mirrors_count=False)
    assert {d.id for d in kept_mirror} == {"portrait", "brighter"}


def test_different_photos_with_a_similar_layout_are_not_duplicates():
    from tests.photos import group_photo

    g = group_photo()
    a, b = np.ascontiguousarray(g[250:450, 0:200]), np.ascontiguousarray(g[250:450, 1080:1280])
    ids, hashes, vectors = _inputs({"a": a, "b": b})
    assert find_duplicates(ids, [0.5, 0.5], hashes, vectors) == []


def test_curate_turns_the_eye_gate_on_unless_the_spec_sets_it():
    spec = orchestrator_pb2.CurateSpec()
    assert curate_policy(spec).min_eye_openness == np.float32(CURATE_MIN_EYE_OPENNESS)
    spec.policy.CopyFrom(detection_pb2.ValidationPolicy(min_eye_openness=0.0, max_yaw=30))
    policy = curate_policy(spec)
    assert policy.HasField("min_eye_openness") and policy.min_eye_openness == 0 and policy.max_yaw == 30


def test_storyboard_rejects_closed_eyes_only_when_asked():
    from likeness.orchestrator.workflows.storyboard import decide

    assert decide(1, None, None, 0.7, 0.5, eyes=0.1, eyes_min=0.35) == "eyes_closed"
    assert decide(1, None, None, 0.7, 0.5, eyes=0.1, eyes_min=0.0) == ""
    assert decide(1, None, None, 0.7, 0.5, eyes=None, eyes_min=0.35) == ""  # not measured: skipped
    assert decide(2, None, None, 0.7, 0.5, eyes=0.1, eyes_min=0.35) == "multiple_faces"
