"""The detection service over real gRPC (core runtime in a background thread, models from the
settings): batches with good and bad items, URIs and bytes, request validation, health."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from likeness.api.v1 import common_pb2, detection_pb2, detection_pb2_grpc
from likeness.core.images import encode_jpeg, encode_png
from likeness.core.store_local import LocalStore
from likeness.detection.app import create_service
from likeness.detection.settings import DetectionSettings
from tests.helpers import ServiceThread, free_port, health_status
from tests.photos import group_photo, skimage_photo

MAX_PIXELS = 2_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    store = LocalStore(root)
    store.put("in/group.jpg", encode_jpeg(group_photo()), "image/jpeg")
    settings = DetectionSettings(port=free_port(), metrics_enabled=False, store_uri=f"file://{root}",
                                 max_image_pixels=MAX_PIXELS, detection_max_batch=16)
    with ServiceThread(create_service(settings), settings) as thread, thread.channel() as channel:
        yield thread, detection_pb2_grpc.DetectionServiceStub(channel), store


def data(b: bytes) -> common_pb2.ImageInput:
    return common_pb2.ImageInput(data=b)


def pil_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_batch_with_bad_items_answers_the_good_ones(server):
    thread, stub, store = server
    astronaut = skimage_photo("astronaut")
    good_png = encode_png(astronaut)
    grey16 = Image.fromarray(np.asarray(Image.fromarray(astronaut).convert("L"), np.uint16) * 257)  # I;16
    rgba = Image.fromarray(np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)]), "RGBA")
    items = [
        data(good_png),                                              # 0 one face
        common_pb2.ImageInput(uri=store.uri("in/group.jpg")),        # 1 six faces, by URI
        data(b""),                                                   # 2 empty
        data(good_png[: len(good_png) // 3]),                        # 3 truncated
        data(b"definitely not an image"),                            # 4 text
        data(encode_png(np.zeros((1, 1, 3), np.uint8))),             # 5 1x1
        data(encode_png(np.zeros((8, 8, 3), np.uint8))),             # 6 8x8
        data(pil_png(Image.fromarray(astronaut).convert("L"))),      # 7 greyscale: decoded, answered
        data(pil_png(rgba)),                                         # 8 RGBA: composited, answered
        data(pil_png(grey16)),                                       # 9 16-bit: top 8 bits, answered
        data(encode_png(np.zeros((1500, 1500, 3), np.uint8))),       # 10 over the pixel limit
        common_pb2.ImageInput(uri=store.uri("in/missing.png")),      # 11 no such object
        data(encode_jpeg(skimage_photo("coffee"))),                  # 12 no face
    ]
    reply = stub.Detect(detection_pb2.DetectRequest(images=items), timeout=120)
    assert reply.backend == "blazeface" and [r.index for r in reply.results] == list(range(len(items)))
    r = reply.results
    assert len(r[0].faces) == 1 and r[0].verdict.accepted and (r[0].width, r[0].height) == (512, 512)
    assert len(r[1].faces) == 6 and r[1].verdict.reason == detection_pb2.REJECTION_REASON_MULTIPLE_FACES
    for i in (7, 8, 9):
        assert not r[i].HasField("error") and len(r[i].faces) == 1, i
    assert r[12].verdict.reason == detection_pb2.REJECTION_REASON_NO_FACE and not r[12].faces
    expected = {2: "empty", 3: "truncated or corrupt", 4: "plain text", 5: "minimum of 16", 6: "minimum of 16",
                10: "1500x1500", 11: ""}
    for i, words in expected.items():
        err = r[i].error
        assert err.index == i and err.field.startswith(f"images[{i}].") and words in err.message, (i, err)
        assert err.code == ("NOT_FOUND" if i == 11 else "INVALID_ARGUMENT")
        assert not r[i].faces and not r[i].HasField("verdict")
    assert "over the limit" in r[10].error.message
    assert health_status(thread.port) == "SERVING"


def test_face_message_has_landmarks_pose_and_embedding(server):
    _, stub, _ = server
    reply = stub.Detect(detection_pb2.DetectRequest(images=[data(encode_png(skimage_photo("astronaut")))],
                                                    with_embeddings=True), timeout=60)
    face = reply.results[0].faces[0]
    kinds = {common_pb2.LandmarkKind.Name(m.kind): (m.point.x, m.point.y) for m in face.landmarks}
    assert {"LANDMARK_KIND_LEFT_EYE", "LANDMARK_KIND_RIGHT_EYE", "LANDMARK_KIND_NOSE_TIP",
            "LANDMARK_KIND_MOUTH_CENTER"} <= set(kinds)
    assert kinds["LANDMARK_KIND_LEFT_EYE"][0] > kinds["LANDMARK_KIND_RIGHT_EYE"][0]  # subject's left: image right
    assert face.HasField("pose") and abs(face.pose.yaw) < 20
    assert face.embedding_model == "dlib-resnet-128" and len(face.embedding.values) == 128
    assert abs(float(np.linalg.norm(face.embedding.values)) - 1) < 1e-5


def test_assess_reports_quality_and_honours_weights_and_min_quality(server):
    _, stub, _ = server
    image = data(encode_png(skimage_photo("astronaut")))
    default = stub.Assess(detection_pb2.AssessRequest(images=[image]), timeout=60).results[0]
    q = default.quality
    assert 0 < q.score <= 1 and q.sharpness_face > 0 and q.sharpness_image > 0 and q.contrast > 0
    assert 0 < q.brightness < 255 and 0 <= q.shadows_clipped < 1 and q.face_confidence == default.faces[0].score
    only_confidence = stub.Assess(detection_pb2.AssessRequest(
        images=[image], weights=detection_pb2.QualityWeights(sharpness=0, contrast=0, exposure=0)),
        timeout=60).results[0]
    assert only_confidence.quality.score == pytest.approx(q.face_confidence, abs=1e-6)
    strict = stub.Assess(detection_pb2.AssessRequest(images=[image], min_quality=0.99), timeout=60).results[0]
    assert strict.verdict.reason == detection_pb2.REJECTION_REASON_LOW_QUALITY and "< 0.99" in strict.verdict.detail


def test_policy_overrides_change_the_verdict(server):
    _, stub, _ = server
    image = data(encode_png(skimage_photo("astronaut")))
    reply = stub.Detect(detection_pb2.DetectRequest(
        images=[image], policy=detection_pb2.ValidationPolicy(min_face_fraction=0.5)), timeout=60)
    assert reply.results[0].verdict.reason == detection_pb2.REJECTION_REASON_FACE_TOO_SMALL


@pytest.mark.parametrize("request_,words", [
    (detection_pb2.DetectRequest(), "images: batch of 0 images; send 1 to 16"),
    (detection_pb2.DetectRequest(images=[common_pb2.ImageInput(data=b"x")] * 17), "batch of 17"),
    (detection_pb2.DetectRequest(images=[common_pb2.ImageInput(data=b"")]), "images[0].data: image is empty"),
    (detection_pb2.DetectRequest(images=[common_pb2.ImageInput()]), "images[0]: neither data nor uri"),
    (detection_pb2.DetectRequest(images=[common_pb2.ImageInput(data=b"x")],
                                 policy=detection_pb2.ValidationPolicy(max_yaw=120)), "policy.max_yaw"),
    (detection_pb2.AssessRequest(images=[common_pb2.ImageInput(data=b"x")],
                                 weights=detection_pb2.QualityWeights(contrast=2)), "weights.contrast"),
    (detection_pb2.AssessRequest(images=[common_pb2.ImageInput(data=b"x")], min_quality=-0.5), "min_quality"),
])
def test_bad_requests_get_invalid_argument_and_the_service_stays_serving(server, request_, words):
    thread, stub, _ = server
    call = stub.Detect if isinstance(request_, detection_pb2.DetectRequest) else stub.Assess
    with pytest.raises(grpc.RpcError) as exc:
        call(request_, timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in exc.value.details()
    assert health_status(thread.port) == "SERVING"


def test_repeated_assessment_is_answered_from_the_result_cache(server):
    """A resent image (a client retry, a resumed job) costs a lookup, not a model run, and gets
    the same answer."""
    from likeness.core import metrics

    def count(outcome: str) -> float:
        return metrics.ITEMS.labels("detection", "assess_model", outcome)._value.get()

    _, stub, _ = server
    img = data(encode_png(skimage_photo("astronaut")[::2, ::2].copy()))
    computed, cached = count("computed"), count("cached")
    first = stub.Assess(detection_pb2.AssessRequest(images=[img]))
    second = stub.Assess(detection_pb2.AssessRequest(images=[img]))
    assert count("computed") == computed + 1 and count("cached") == cached + 1
    assert first.results[0] == second.results[0]
    other_policy = stub.Assess(detection_pb2.AssessRequest(images=[img],
                                                           policy=detection_pb2.ValidationPolicy(max_yaw=10)))
    assert count("computed") == computed + 2  # different parameters: a different result, computed
    assert other_policy.results[0].quality == first.results[0].quality
