"""`likeness serve detection` as a real process: SERVING only after warm-up with the embedded
models; with the InsightFace backend and no pack it exits at start-up naming the missing file."""

from __future__ import annotations

from likeness.api.v1 import common_pb2, detection_pb2, detection_pb2_grpc
from likeness.core.images import encode_png
from tests.helpers import model_env, service_env, spawn_service, startup_failure
from tests.photos import skimage_photo


def test_serves_detect_after_warm_up(tmp_path):
    import grpc

    env = service_env(LIKENESS_STORE_URI=f"file://{tmp_path}/store")
    proc = spawn_service("detection", env, tmp_path)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            reply = detection_pb2_grpc.DetectionServiceStub(channel).Detect(detection_pb2.DetectRequest(
                images=[common_pb2.ImageInput(data=encode_png(skimage_photo("astronaut")))]), timeout=60)
        assert reply.backend == "blazeface" and reply.results[0].verdict.accepted
    finally:
        assert proc.stop() == 0
    log = (tmp_path / "detection.log").read_text()
    assert '"backend": "blazeface"' in log and '"identity": "dlib"' in log


def test_insightface_without_pack_fails_start_up_naming_the_file(tmp_path):
    output = startup_failure("detection", model_env(tmp_path, LIKENESS_DETECTION_BACKEND="insightface"), tmp_path)
    assert "detectioncannotstart:model:model'buffalo_l'ismissing" in output
    assert str(tmp_path / "models" / "buffalo_l" / "model.yaml") in output
