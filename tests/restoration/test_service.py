"""The restoration service over real gRPC: the orchestrator's eye-fix sequence, batches, bad input
(right status, field named, service still SERVING)."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from likeness.api.v1 import common_pb2, restoration_pb2, restoration_pb2_grpc
from likeness.core.images import encode_mask_png, encode_png
from likeness.core.store_local import LocalStore
from likeness.restoration.app import create_service
from likeness.restoration.settings import RestorationSettings
from tests.helpers import ServiceThread, free_port, health_status
from tests.photos import skimage_photo
from tests.restoration import astronaut as A

SERVICE = "likeness.v1.RestorationService"
LM = common_pb2.LandmarkKind


def landmarks(**points) -> list[common_pb2.Landmark]:
    return [common_pb2.Landmark(kind=LM.Value(f"LANDMARK_KIND_{k.upper()}"), point=common_pb2.Point(x=x, y=y))
            for k, (x, y) in points.items()]


ASTRONAUT_LANDMARKS = landmarks(left_eye=A.LEFT_EYE, right_eye=A.RIGHT_EYE, mouth_center=A.MOUTH_CENTER)
FACE_BOX = common_pb2.Box(x_min=A.FACE_BOX[0], y_min=A.FACE_BOX[1], x_max=A.FACE_BOX[2], y_max=A.FACE_BOX[3])


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("restoration")
    settings = RestorationSettings(port=free_port(), metrics_enabled=False, store_uri=f"file://{root}/store",
                                   model_repository=f"file://{root}/models", model_cache_dir=str(root / "cache"))
    store = LocalStore(root / "store")
    with ServiceThread(create_service(settings), settings) as thread, thread.channel() as channel:
        yield thread, restoration_pb2_grpc.RestorationServiceStub(channel), store


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=30)
    return err.value


def test_eye_fix_sequence_mask_composite_restore(server):
    thread, stub, store = server
    photo = A.photo()
    base_uri = store.put("inputs/astronaut.png", encode_png(photo), "image/png").uri

    masks = stub.RegionMask(restoration_pb2.RegionMaskRequest(
        region=restoration_pb2.REGION_BOTH_EYES, return_inline=True, output_prefix="jobs/42",
        items=[restoration_pb2.RegionMaskItem(width=512, height=512, landmarks=ASTRONAUT_LANDMARKS)]), timeout=30)
    (built,) = masks.results
    mask = decode(built.mask.data)
    assert mask.shape == (512, 512) and mask[103, 246] == 255 and mask[101, 205] == 255 and mask[146, 224] == 0
    assert built.area == int((mask > 0).sum())
    assert store.get(built.mask.uri) == built.mask.data and "/jobs/42/masks/" in built.mask.uri
    box = built.crop_box
    width, height = int(box.x_max - box.x_min), int(box.y_max - box.y_min)
    assert width % 8 == 0 and height % 8 == 0 and box.x_min % 8 == 0

    # the inpainted crop (here: the crop with a colour drift, as SD inpainting produces)
    crop = photo[int(box.y_min):int(box.y_max), int(box.x_min):int(box.x_max)]
    patch = np.clip(crop.astype(np.int16) + 30, 0, 255).astype(np.uint8)
    composed = stub.Composite(restoration_pb2.CompositeRequest(
        return_inline=True, items=[restoration_pb2.CompositeItem(
            base=common_pb2.ImageInput(uri=base_uri), patch=common_pb2.ImageInput(data=encode_png(patch)),
            mask=common_pb2.ImageInput(uri=built.mask.uri), patch_box=box)]), timeout=30)
    out = decode(composed.results[0].image.data)
    seam = composed.results[0].seam  # measured on the composite: far below a hard paste's
    assert 0 < seam.boundary_gradient <= 0.5 * seam.hard_gradient and seam.max_step <= seam.reference_step
    far = np.ones(mask.shape, bool)
    far[int(box.y_min):int(box.y_max), int(box.x_min):int(box.x_max)] = False
    assert np.array_equal(out[far], photo[far])
    assert out[103, 246].astype(int).sum() > photo[103, 246].astype(int).sum() + 60

    restored = stub.Restore(restoration_pb2.RestoreRequest(return_inline=True, items=[
        restoration_pb2.RestoreItem(image=common_pb2.ImageInput(uri=composed.results[0].image.uri),
                                    face_box=FACE_BOX, landmarks=ASTRONAUT_LANDMARKS)]), timeout=30)
    assert restored.model == "classical"
    final = decode(restored.results[0].image.data)
    assert final.shape == out.shape and not np.array_equal(final, out)
    assert np.array_equal(final[:40], out[:40])  # far above the face: untouched
    changed = (final != out).any(axis=2)  # what the service reports, counted here
    ys, xs = np.nonzero(changed)
    result = restored.results[0]
    assert result.changed_pixels == int(changed.sum()) > 0
    assert (result.changed_box.x_min, result.changed_box.y_min, result.changed_box.x_max, result.changed_box.y_max) \
        == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)

    same = stub.Restore(restoration_pb2.RestoreRequest(fidelity=1.0, return_inline=True, items=[
        restoration_pb2.RestoreItem(image=common_pb2.ImageInput(data=encode_png(out)), face_box=FACE_BOX)]),
        timeout=30)
    assert np.array_equal(decode(same.results[0].image.data), out)
    assert same.results[0].changed_pixels == 0 and not same.results[0].HasField("changed_box")


def test_composite_decodes_a_shared_base_and_mask_once_per_call(server, monkeypatch):
    from likeness.core import image_loader

    _, stub, store = server
    base, mask = A.photo(), np.zeros((512, 512), np.uint8)
    mask[80:130, 180:270] = 255
    patches = [np.full((512, 512, 3), 60 * (i + 1), np.uint8) for i in range(3)]
    uris = [store.put(f"shared/{name}.png", png, "image/png").uri for name, png in
            [("base", encode_png(base)), ("mask", encode_mask_png(mask))]]
    decoded = []
    real = image_loader.decode_image
    monkeypatch.setattr(image_loader, "decode_image", lambda data, *a, **k: decoded.append(1) or real(data, *a, **k))
    reply = stub.Composite(restoration_pb2.CompositeRequest(return_inline=True, items=[
        restoration_pb2.CompositeItem(base=common_pb2.ImageInput(uri=uris[0]), mask=common_pb2.ImageInput(uri=uris[1]),
                                      patch=common_pb2.ImageInput(data=encode_png(p))) for p in patches]), timeout=30)
    assert len(decoded) == 2 + len(patches)  # base and mask once, each patch once
    for p, r in zip(patches, reply.results, strict=True):  # each item still blends its own patch
        out = decode(r.image.data)
        assert (out[105, 225] == p[105, 225]).all() and np.array_equal(out[:60], base[:60])


def test_batch_reports_bad_items_beside_good_ones(server):
    _, stub, _ = server
    good = restoration_pb2.RegionMaskItem(width=512, height=512, landmarks=ASTRONAUT_LANDMARKS)
    outside = restoration_pb2.RegionMaskItem(width=512, height=512,
                                             landmarks=landmarks(left_eye=(700, 103), right_eye=A.RIGHT_EYE))
    response = stub.RegionMask(restoration_pb2.RegionMaskRequest(region=restoration_pb2.REGION_LEFT_EYE,
                                                                 items=[good, outside, good]), timeout=30)
    assert [r.HasField("error") for r in response.results] == [False, True, False]
    err = response.results[1].error
    assert err.code == "INVALID_ARGUMENT" and err.field == "items[1].landmarks[LEFT_EYE]" and "outside" in err.message
    assert response.results[0].mask.uri == response.results[2].mask.uri  # same content, same key


def composite_item(base: np.ndarray, patch: np.ndarray, mask: np.ndarray) -> restoration_pb2.CompositeItem:
    return restoration_pb2.CompositeItem(base=common_pb2.ImageInput(data=encode_png(base)),
                                         patch=common_pb2.ImageInput(data=encode_png(patch)),
                                         mask=common_pb2.ImageInput(data=encode_mask_png(mask)))


def test_composite_and_restore_batches_report_bad_items_beside_good_ones(server):
    _, stub, _ = server
    base, patch = np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 200, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[4:60, 4:60] = 255  # deeper than the feather at its centre
    reply = stub.Composite(restoration_pb2.CompositeRequest(return_inline=True, items=[
        composite_item(base, patch, mask), composite_item(base, patch, mask[:32]), composite_item(base, patch, mask)]),
        timeout=30)
    assert [r.HasField("error") for r in reply.results] == [False, True, False]
    assert reply.results[1].error.field == "items[1].mask" and "must match the base" in reply.results[1].error.message
    assert decode(reply.results[0].image.data)[32, 32].tolist() == [200, 200, 200]

    photo = encode_png(A.photo())
    reply = stub.Restore(restoration_pb2.RestoreRequest(items=[
        restoration_pb2.RestoreItem(image=common_pb2.ImageInput(data=photo), face_box=FACE_BOX),
        restoration_pb2.RestoreItem(image=common_pb2.ImageInput(data=b"GIF89a..."), face_box=FACE_BOX)]), timeout=30)
    assert not reply.results[0].HasField("error") and reply.results[0].image.uri
    assert reply.results[1].error.code == "INVALID_ARGUMENT" and reply.results[1].error.field == "items[1].image.data"


def test_finished_work_is_found_by_its_work_id_not_redone(server):
    _, stub, store = server
    photo = encode_png(A.photo())

    def restore(fidelity: float):
        return stub.Restore(restoration_pb2.RestoreRequest(fidelity=fidelity, output_prefix="rerun", items=[
            restoration_pb2.RestoreItem(image=common_pb2.ImageInput(data=photo), face_box=FACE_BOX,
                                        landmarks=ASTRONAUT_LANDMARKS)]), timeout=30).results[0].image

    first = restore(0.3)
    assert "/rerun/restored/" in first.uri and restore(0.3).uri == first.uri and restore(0.4).uri != first.uri
    # a finished output is returned as stored: here a marker written over it
    marker = encode_png(np.zeros((16, 16, 3), np.uint8))
    store.put(store.key_of(first.uri), marker, "image/png")
    again = stub.Restore(restoration_pb2.RestoreRequest(fidelity=0.3, output_prefix="rerun", items=[
        restoration_pb2.RestoreItem(image=common_pb2.ImageInput(data=photo), face_box=FACE_BOX,
                                    landmarks=ASTRONAUT_LANDMARKS)]), timeout=30).results[0]
    assert again.image.uri == first.uri and again.image.size_bytes == len(marker)
    assert again.changed_pixels == 16 * 16  # counted on what is stored: here every pixel of the marker


BAD_REQUESTS = {
    "no region": ("RegionMask", restoration_pb2.RegionMaskRequest(
        items=[restoration_pb2.RegionMaskItem(width=512, height=512, landmarks=ASTRONAUT_LANDMARKS)]),
        "INVALID_ARGUMENT", "region"),
    "landmarks outside": ("RegionMask", restoration_pb2.RegionMaskRequest(
        region=restoration_pb2.REGION_BOTH_EYES, items=[restoration_pb2.RegionMaskItem(
            width=200, height=200, landmarks=ASTRONAUT_LANDMARKS)]), "INVALID_ARGUMENT", "landmarks[LEFT_EYE]"),
    "mask over the pixel limit": ("RegionMask", restoration_pb2.RegionMaskRequest(
        region=restoration_pb2.REGION_BOTH_EYES, items=[restoration_pb2.RegionMaskItem(
            width=16384, height=16384, landmarks=ASTRONAUT_LANDMARKS)]), "INVALID_ARGUMENT",
            "LIKENESS_MAX_IMAGE_PIXELS"),
    "face without box": ("RegionMask", restoration_pb2.RegionMaskRequest(
        region=restoration_pb2.REGION_FACE, items=[restoration_pb2.RegionMaskItem(width=512, height=512)]),
        "INVALID_ARGUMENT", "face_box"),
    "bad padding": ("RegionMask", restoration_pb2.RegionMaskRequest(
        region=restoration_pb2.REGION_BOTH_EYES, padding_iod=3.0, items=[restoration_pb2.RegionMaskItem(
            width=512, height=512, landmarks=ASTRONAUT_LANDMARKS)]), "INVALID_ARGUMENT", "padding_iod"),
    "path traversal prefix": ("RegionMask", restoration_pb2.RegionMaskRequest(
        region=restoration_pb2.REGION_BOTH_EYES, output_prefix="../etc", items=[restoration_pb2.RegionMaskItem(
            width=512, height=512, landmarks=ASTRONAUT_LANDMARKS)]), "INVALID_ARGUMENT", "output_prefix"),
    "empty batch": ("Composite", restoration_pb2.CompositeRequest(), "INVALID_ARGUMENT", "items"),
    "mask size mismatch": ("Composite", restoration_pb2.CompositeRequest(items=[composite_item(
        np.zeros((64, 64, 3), np.uint8), np.ones((64, 64, 3), np.uint8), np.full((48, 64), 255, np.uint8))]),
        "INVALID_ARGUMENT", "items[0].mask"),
    "empty mask": ("Composite", restoration_pb2.CompositeRequest(items=[composite_item(
        np.zeros((64, 64, 3), np.uint8), np.ones((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))]),
        "INVALID_ARGUMENT", "is empty"),
    "corrupt base": ("Composite", restoration_pb2.CompositeRequest(items=[restoration_pb2.CompositeItem(
        base=common_pb2.ImageInput(data=b"\x89PNG\r\n\x1a\nbroken"), patch=common_pb2.ImageInput(data=b"x"),
        mask=common_pb2.ImageInput(data=b"y"))]), "INVALID_ARGUMENT", "items[0].base.data"),
    "feather out of range": ("Composite", restoration_pb2.CompositeRequest(feather_sigma=500, items=[
        composite_item(np.zeros((64, 64, 3), np.uint8), np.ones((64, 64, 3), np.uint8),
                       np.full((64, 64), 255, np.uint8))]), "INVALID_ARGUMENT", "feather_sigma"),
    "fidelity above 1": ("Restore", restoration_pb2.RestoreRequest(fidelity=1.5, items=[
        restoration_pb2.RestoreItem(image=common_pb2.ImageInput(data=encode_png(A.photo())), face_box=FACE_BOX)]),
        "INVALID_ARGUMENT", "fidelity"),
    "non-face image": ("Restore", restoration_pb2.RestoreRequest(items=[restoration_pb2.RestoreItem(
        image=common_pb2.ImageInput(data=encode_png(skimage_photo("coffee"))))]),
        "INVALID_ARGUMENT", "items[0].face_box"),
    "missing codeformer": ("Restore", restoration_pb2.RestoreRequest(model="codeformer", items=[
        restoration_pb2.RestoreItem(image=common_pb2.ImageInput(data=encode_png(A.photo())), face_box=FACE_BOX)]),
        "FAILED_PRECONDITION", "codeformer.pth"),
    "gfpgan": ("Restore", restoration_pb2.RestoreRequest(model="gfpgan", items=[
        restoration_pb2.RestoreItem(image=common_pb2.ImageInput(data=encode_png(A.photo())), face_box=FACE_BOX)]),
        "FAILED_PRECONDITION", "gfpgan"),
    "unknown model": ("Restore", restoration_pb2.RestoreRequest(model="esrgan", items=[
        restoration_pb2.RestoreItem(image=common_pb2.ImageInput(data=encode_png(A.photo())), face_box=FACE_BOX)]),
        "INVALID_ARGUMENT", "esrgan"),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_input_gets_a_clear_status_and_the_service_stays_serving(server, name):
    thread, stub, _ = server
    method, request, code, needle = BAD_REQUESTS[name]
    err = rpc_error(getattr(stub, method), request)
    assert err.code().name == code, err.details()
    assert needle in err.details()
    assert health_status(thread.port, SERVICE) == "SERVING"


def test_a_default_restorer_without_weights_fails_start_up_naming_the_files(tmp_path):
    import asyncio

    from likeness.core.errors import ModelMissing

    settings = RestorationSettings(restoration_backend="codeformer", metrics_enabled=False,
                                   store_uri=f"file://{tmp_path}/store", model_repository=f"file://{tmp_path}/models",
                                   model_cache_dir=str(tmp_path / "cache"))
    service = create_service(settings)
    with pytest.raises(ModelMissing) as err:
        asyncio.run(service.warmup())
    assert f"{tmp_path}/models/codeformer" in str(err.value) and "codeformer.pth" in str(err.value)


def test_control_images_face_landmarks_and_canny(server):
    _, stub, _ = server
    photo = A.photo()
    face = restoration_pb2.ControlFace(box=FACE_BOX, landmarks=ASTRONAUT_LANDMARKS)
    item = restoration_pb2.ControlImageItem(image=common_pb2.ImageInput(data=encode_png(photo)), faces=[face])
    landmarks = stub.ControlImage(restoration_pb2.ControlImageRequest(
        kind=restoration_pb2.CONTROL_KIND_FACE_LANDMARKS, items=[item], return_inline=True), timeout=30)
    drawn = decode(landmarks.results[0].image.data)
    assert drawn.shape == photo.shape
    assert drawn[:20].max() == 0  # black above the face
    lx, ly = (int(v) for v in A.LEFT_EYE)
    eye = drawn[ly - 30:ly + 30, lx - 40:lx + 40]
    assert (eye[..., 1] == 255).sum() > 20 and (eye[..., 0] == 0).any()  # the green eye outline is there
    canny = stub.ControlImage(restoration_pb2.ControlImageRequest(
        kind=restoration_pb2.CONTROL_KIND_CANNY, items=[item], canny_low=50, canny_high=150, return_inline=True),
        timeout=30)
    edges = decode(canny.results[0].image.data)
    assert set(np.unique(edges)) <= {0, 255} and 0.01 < (edges > 0).mean() < 0.5
    no_face = restoration_pb2.ControlImageItem(image=common_pb2.ImageInput(data=encode_png(photo)))
    with pytest.raises(grpc.RpcError) as err:
        stub.ControlImage(restoration_pb2.ControlImageRequest(kind=restoration_pb2.CONTROL_KIND_FACE_LANDMARKS,
                                                               items=[no_face]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("items[0].faces")
    with pytest.raises(grpc.RpcError) as err:
        stub.ControlImage(restoration_pb2.ControlImageRequest(items=[item]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("kind")


@pytest.mark.parametrize("inference", [True, False])
def test_warm_up_loads_the_default_restorer_and_runs_it_only_when_configured(tmp_path, monkeypatch, inference):
    import asyncio

    from likeness.restoration import app
    from likeness.restoration.restorers.base import FaceRestorer

    calls = []

    class Recording:
        input_size = 512

        def load(self):
            calls.append("load")

        def restore(self, face, fidelity):
            calls.append(("restore", face.shape))
            return face

        warmup = FaceRestorer.warmup  # the protocol's own: one restoration at the input size

    monkeypatch.setattr(app, "create_restorer", lambda name, *a, **k: Recording())
    settings = RestorationSettings(restoration_backend="codeformer", restoration_warmup_inference=inference,
                                   metrics_enabled=False, store_uri=f"file://{tmp_path}/store")
    asyncio.run(create_service(settings, model_dir=lambda name: tmp_path).warmup())
    assert calls == (["load", ("restore", (512, 512, 3))] if inference else ["load"])
