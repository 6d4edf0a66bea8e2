"""`likeness serve restoration` as a real process: SERVING after warm-up with the classical
restorer; with CodeFormer as default and no weights it exits at start-up naming the file."""

from __future__ import annotations

import grpc

from likeness.api.v1 import common_pb2, restoration_pb2, restoration_pb2_grpc
from tests.helpers import model_env, service_env, spawn_service, startup_failure
from tests.restoration import astronaut as A


def test_serves_region_mask_after_warm_up(tmp_path):
    env = service_env(LIKENESS_STORE_URI=f"file://{tmp_path}/store")
    proc = spawn_service("restoration", env, tmp_path)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            reply = restoration_pb2_grpc.RestorationServiceStub(channel).RegionMask(
                restoration_pb2.RegionMaskRequest(region=restoration_pb2.REGION_BOTH_EYES, items=[
                    restoration_pb2.RegionMaskItem(width=512, height=512, landmarks=[
                        common_pb2.Landmark(kind=common_pb2.LANDMARK_KIND_LEFT_EYE,
                                            point=common_pb2.Point(x=A.LEFT_EYE[0], y=A.LEFT_EYE[1])),
                        common_pb2.Landmark(kind=common_pb2.LANDMARK_KIND_RIGHT_EYE,
                                            point=common_pb2.Point(x=A.RIGHT_EYE[0], y=A.RIGHT_EYE[1]))])]),
                timeout=60)
        assert reply.results[0].area > 500 and reply.results[0].mask.uri.startswith(f"file://{tmp_path}/store/")
    finally:
        assert proc.stop() == 0
    assert '"restorer": "classical"' in (tmp_path / "restoration.log").read_text()


def test_codeformer_default_without_weights_fails_start_up_naming_the_file(tmp_path):
    output = startup_failure("restoration", model_env(tmp_path, LIKENESS_RESTORATION_BACKEND="codeformer"), tmp_path)
    assert "restorationcannotstart:model:model'codeformer'ismissing" in output
    assert str(tmp_path / "models" / "codeformer" / "model.yaml") in output and "codeformer.pth" in output
