"""Checkpoint evaluation through the real embedding and detection services (in-process gRPC
servers), NaN with a reason when a service is not configured or not reachable, and the
best-checkpoint rule."""

from __future__ import annotations

import math

import pytest

from likeness.training.evaluation import Evaluator, choose_best
from tests.helpers import ServiceThread, free_port
from tests.photos import skimage_photo, tom_hanks


@pytest.fixture(scope="module")
def detection_address(tmp_path_factory):
    from likeness.detection.app import create_service
    from likeness.detection.settings import DetectionSettings

    root = tmp_path_factory.mktemp("detection")
    s = DetectionSettings(port=free_port(), metrics_enabled=False, store_uri=f"file://{root}/store")
    with ServiceThread(create_service(s), s) as svc:
        yield svc.address


@pytest.fixture(scope="module")
def embedding_address(tmp_path_factory):
    from likeness.embedding.app import create_service
    from likeness.embedding.settings import EmbeddingSettings

    root = tmp_path_factory.mktemp("embedding")
    s = EmbeddingSettings(port=free_port(), metrics_enabled=False, store_uri=f"file://{root}/store",
                          model_repository=str(root / "models"), model_cache_dir=str(root / "cache"),
                          embedding_encoder="open_clip", embedding_open_clip_model="tiny-clip",
                          embedding_build_tiny=True)
    with ServiceThread(create_service(s), s) as svc:
        yield svc.address


def test_not_configured_is_nan_with_a_reason():
    ev = Evaluator()
    assert "LIKENESS_TRAINING_DETECTION_ADDRESS is not set" in ev.set_reference([skimage_photo("astronaut")])
    result = ev.evaluate([[skimage_photo("coffee")]], ["a cup"], [1])
    assert math.isnan(result.clip_score) and math.isnan(result.identity_similarity)
    assert any("LIKENESS_TRAINING_EMBEDDING_ADDRESS is not set" in n for n in result.notes)


def test_unreachable_service_is_nan_with_a_reason():
    ev = Evaluator(embedding_address=f"127.0.0.1:{free_port()}", timeout=2.0)
    result = ev.evaluate([[skimage_photo("coffee")]], ["a cup"], [1])
    assert math.isnan(result.clip_score)
    assert any("embedding service failed (UNAVAILABLE" in n or "DEADLINE_EXCEEDED" in n for n in result.notes)


@pytest.mark.slow
def test_identity_similarity_through_the_detection_service(detection_address):
    ev = Evaluator(detection_address=detection_address)
    assert ev.set_reference([skimage_photo("astronaut")]) == ""
    result = ev.evaluate([[skimage_photo("astronaut"), tom_hanks(), skimage_photo("coffee")]],
                         ["a portrait"], [1, 2, 3])
    same, other, no_face = (s["identity_similarity"] for s in result.per_sample)
    assert same > 0.99  # the training face itself
    assert other < same - 0.05  # a different person is measurably less similar
    assert math.isnan(no_face)  # a sample without a face is left out of the mean
    assert result.identity_similarity == pytest.approx((same + other) / 2)

    faceless = Evaluator(detection_address=detection_address)
    assert "no face in the training images" in faceless.set_reference([skimage_photo("coffee")])


@pytest.mark.slow
def test_clip_score_through_the_embedding_service(embedding_address):
    ev = Evaluator(embedding_address=embedding_address)
    result = ev.evaluate([[skimage_photo("astronaut"), skimage_photo("coffee")]], ["a person"], [1, 2])
    scores = [s["clip_score"] for s in result.per_sample]
    assert all(0.0 <= s <= 1.0 for s in scores)  # tiny-clip: real code path, meaningless values
    assert result.clip_score == pytest.approx(sum(scores) / 2)


def test_best_checkpoint_rule():
    nan = math.nan
    # identity first (rounded to 0.01), then CLIP score, then the later step
    assert choose_best([(10, 0.50, 0.2), (20, 0.70, 0.1), (30, 0.60, 0.9)]) == 1
    assert choose_best([(10, 0.701, 0.3), (20, 0.704, 0.1)]) == 0
    assert choose_best([(10, nan, 0.3), (20, nan, 0.2)]) == 0
    assert choose_best([(10, nan, 0.9), (20, 0.1, nan)]) == 1  # measured identity beats none
    assert choose_best([(10, nan, nan), (20, nan, nan), (30, nan, nan)]) == 2  # nothing measured: last


@pytest.mark.slow
def test_a_run_scores_its_checkpoints_through_both_services(settings, embedding_address, detection_address):
    """The services are reached from the training thread of a running service (its own event
    loop); what they cannot measure is NaN with the reason recorded in the run."""
    from likeness.api.v1 import training_pb2 as pb
    from likeness.api.v1 import training_pb2_grpc
    from likeness.core.store_local import LocalStore
    from likeness.training.app import create_service
    from tests.training.conftest import write_dataset

    settings = settings.model_copy(update={"training_embedding_address": embedding_address,
                                           "training_detection_address": detection_address})
    write_dataset(LocalStore(settings.store_uri.removeprefix("file://")), "datasets/eval", 2)
    spec = pb.RunSpec(base_model="tiny-sdxl", dataset_uri="datasets/eval", trigger_token="ohwx", rank=4, epochs=1,
                      sample_prompts=["a portrait", "a landscape"], sample_seeds=[1, 2], sample_steps=1)
    with ServiceThread(create_service(settings), settings) as svc, svc.channel() as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        run_id = stub.StartRun(pb.StartRunRequest(spec=spec)).run.run_id
        last = list(stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=300))[-1]
        assert last.state == pb.RUN_STATE_SUCCEEDED, last.message
        (ckpt,) = stub.GetRun(pb.GetRunRequest(run_id=run_id)).run.checkpoints
    assert 0.0 <= ckpt.clip_score <= 1.0  # measured by the embedding service (tiny-clip)
    from likeness.training.registry import RunRegistry

    registry = RunRegistry(settings.training_database_url)
    notes = registry.get(run_id).notes
    registry.close()
    # identity: measured when the detector finds faces in both the thumbnails and the (noise)
    # samples, which the real detector does here; otherwise NaN and the run says why
    if math.isnan(ckpt.identity_similarity):
        assert any("identity similarity not measured" in n for n in notes), notes
    else:
        assert -1.0 <= ckpt.identity_similarity <= 1.0
        assert not any("identity" in n for n in notes), notes
