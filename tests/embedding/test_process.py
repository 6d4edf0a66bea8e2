"""A real `python -m likeness serve embedding` process configured only from the environment: the
open_clip encoder with tiny-clip (from the session's model repository; building it is covered by
tests/e2e), SERVING after warm-up, Score answering, and a clean exit on SIGTERM."""

from __future__ import annotations

import grpc
import pytest

from likeness.api.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc
from likeness.core.images import encode_png
from tests import photos
from tests.helpers import service_env, spawn_service


@pytest.mark.slow
def test_serve_embedding_with_tiny_clip_from_the_environment(tmp_path, tiny_clip_repo):
    models = tiny_clip_repo[1]
    env = service_env(LIKENESS_STORE_URI=f"file://{tmp_path}/store", LIKENESS_MODEL_REPOSITORY=f"file://{models}",
                      LIKENESS_MODEL_CACHE_DIR=str(tmp_path / "cache"), LIKENESS_EMBEDDING_ENCODER="open_clip",
                      LIKENESS_EMBEDDING_OPEN_CLIP_MODEL="tiny-clip", LIKENESS_EMBEDDING_BUILD_TINY="true")
    proc = spawn_service("embedding", env, tmp_path)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
            image = common_pb2.ImageInput(data=encode_png(photos.skimage_photo("astronaut")))
            scored = stub.Score(embedding_pb2.ScoreRequest(images=[image], texts=["an astronaut"]), timeout=60)
            assert scored.encoder == "open_clip:likeness-tiny-clip" and len(scored.score) == 1
            assert 0.0 <= scored.score[0] <= 1.0
        log = (tmp_path / "embedding.log").read_text()
        assert "RANDOM WEIGHTS" in log
    finally:
        assert proc.stop() == 0
