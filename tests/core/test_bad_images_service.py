"""A corpus of bad images sent to a LIVE gRPC server: each gets INVALID_ARGUMENT (NOT_FOUND for a
missing object) with a message naming the field and the limit, and the server stays SERVING.

The server is the real runtime (core.server: interceptor, health, reflection) hosting a test-only
DetectionService whose Detect does exactly what every real servicer does with its images: ImageLoader
.load_all, per-item errors in a batch, the error itself for a batch of one. No detector runs."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from likeness.api.v1 import common_pb2, detection_pb2, detection_pb2_grpc
from likeness.core.convert import item_error_pb
from likeness.core.image_loader import ImageLoader
from likeness.core.images import ImageLimits, encode_jpeg, encode_png
from likeness.core.server import Service
from likeness.core.settings import CommonSettings
from likeness.core.store_local import LocalStore
from tests.helpers import ServiceThread, free_port, health_status

SERVICE = "likeness.v1.DetectionService"
MAX_PIXELS = 100_000  # LIKENESS_MAX_IMAGE_PIXELS for this server
MAX_BYTES = 1_000_000  # LIKENESS_MAX_IMAGE_BYTES


class LoaderOnlyDetection(detection_pb2_grpc.DetectionServiceServicer):
    def __init__(self, loader: ImageLoader):
        self.loader = loader

    async def Detect(self, request, context):
        loaded = await self.loader.load_all(request.images)
        if len(loaded) == 1 and loaded[0].error is not None:
            raise loaded[0].error  # the interceptor maps it to its status code
        results = []
        for item in loaded:
            result = detection_pb2.DetectResult(index=item.index)
            if item.error is not None:
                result.error.CopyFrom(item_error_pb(item.index, item.error))
            else:
                result.height, result.width = item.pixels.shape[:2]
            results.append(result)
        return detection_pb2.DetectResponse(results=results, backend="loader-only-test")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    settings = CommonSettings(port=free_port(), metrics_enabled=False, store_uri=f"file://{root}",
                              max_image_pixels=MAX_PIXELS, max_image_bytes=MAX_BYTES, min_image_side=16)
    store = LocalStore(root)
    store.put("inputs/good.png", encode_png(rgb(64, 48)), "image/png")
    loader = ImageLoader(store, ImageLimits.from_settings(settings))
    service = Service("detection", [(detection_pb2_grpc.add_DetectionServiceServicer_to_server,
                                     LoaderOnlyDetection(loader))], [SERVICE])
    with ServiceThread(service, settings) as thread, thread.channel() as channel:
        yield thread, detection_pb2_grpc.DetectionServiceStub(channel), store
    loader.close()


def rgb(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def saved(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    jpeg = bytearray(encode_jpeg(rgb(32, 32)))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(jpeg)


def zip_of_png() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("face.png", encode_png(rgb(32, 32)))
    return buf.getvalue()


GOOD_PNG = encode_png(rgb(64, 48))
GOOD_JPEG = encode_jpeg(rgb(64, 64))
GOOD_WEBP = saved(Image.fromarray(rgb(64, 64)), "WEBP")
CORRUPT_JPEG = GOOD_JPEG[:2] + bytes(np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8))

# (case, ImageInput kwargs, expected status, substrings of the message)
CASES = [
    ("empty", {"data": b""}, "INVALID_ARGUMENT", ["images[0].data: image is empty (0 bytes)"]),
    ("truncated PNG", {"data": GOOD_PNG[: len(GOOD_PNG) // 2]}, "INVALID_ARGUMENT",
     ["images[0].data: PNG data is truncated or corrupt"]),
    ("PNG cut inside its header", {"data": GOOD_PNG[:30]}, "INVALID_ARGUMENT",
     ["images[0].data: PNG header is corrupt or truncated"]),
    ("corrupt JPEG", {"data": CORRUPT_JPEG}, "INVALID_ARGUMENT", ["images[0].data: JPEG"]),
    ("truncated JPEG", {"data": GOOD_JPEG[: len(GOOD_JPEG) // 3]}, "INVALID_ARGUMENT",
     ["images[0].data: JPEG data is truncated or corrupt"]),
    ("truncated WebP", {"data": GOOD_WEBP[: len(GOOD_WEBP) // 2]}, "INVALID_ARGUMENT", ["images[0].data: WEBP"]),
    ("PNG header claiming 50000x50000", {"data": png_claiming(50000, 50000)}, "INVALID_ARGUMENT",
     ["50000x50000 (2,500,000,000 pixels), over the limit of 100,000 pixels"]),
    ("JPEG header claiming 65000x65000", {"data": jpeg_claiming(65000, 65000)}, "INVALID_ARGUMENT",
     ["image is 65000x65000 (4,225,000,000 pixels), over the limit of 100,000 pixels"]),
    ("valid image over the pixel limit", {"data": encode_png(rgb(400, 300))}, "INVALID_ARGUMENT",
     ["image is 400x300 (120,000 pixels), over the limit of 100,000 pixels"]),
    ("over the byte limit", {"data": GOOD_PNG + b"\0" * MAX_BYTES}, "INVALID_ARGUMENT",
     [f"bytes, over the limit of {MAX_BYTES:,} bytes"]),
    ("1x1 image", {"data": encode_png(rgb(1, 1))}, "INVALID_ARGUMENT",
     ["image is 1x1, a side under the minimum of 16 px"]),
    ("plain text", {"data": b"This is a README, not a photo.\n"}, "INVALID_ARGUMENT",
     ["unsupported image format: plain text (starts with 'This is a README"]),
    ("zip file", {"data": zip_of_png()}, "INVALID_ARGUMENT", ["unsupported image format: ZIP archive"]),
    ("GIF", {"data": saved(Image.new("RGB", (32, 32)), "GIF")}, "INVALID_ARGUMENT",
     ["unsupported image format: GIF; accepted: PNG, JPEG, WebP"]),
    ("BMP", {"data": saved(Image.new("RGB", (32, 32)), "BMP")}, "INVALID_ARGUMENT",
     ["unsupported image format: BMP"]),
    ("TIFF", {"data": saved(Image.new("RGB", (32, 32)), "TIFF")}, "INVALID_ARGUMENT",
     ["unsupported image format: TIFF"]),
    ("random bytes", {"data": bytes(np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8))},
     "INVALID_ARGUMENT", ["unsupported image format: unrecognised data (first bytes"]),
    ("neither data nor uri", {}, "INVALID_ARGUMENT", ["images[0]: neither data nor uri is set"]),
    ("URI with path traversal", {"uri": "STORE/inputs/../../../etc/passwd"}, "INVALID_ARGUMENT",
     ["images[0].uri:", "path traversal is not allowed"]),
    ("URI outside the store", {"uri": "file:///etc/passwd"}, "INVALID_ARGUMENT",
     ["images[0].uri:", "outside the store root"]),
    ("URI of another scheme", {"uri": "http://example.com/a.png"}, "INVALID_ARGUMENT",
     ["images[0].uri: URI scheme 'http' is not supported"]),
    ("missing URI", {"uri": "STORE/inputs/missing.png"}, "NOT_FOUND",
     ["images[0].uri:", "inputs/missing.png does not exist"]),
]


@pytest.mark.parametrize("case,kwargs,status,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_image_is_rejected_and_server_stays_serving(server, case, kwargs, status, expected):
    thread, stub, store = server
    kwargs = {k: v.replace("STORE", store.root_uri) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(grpc.RpcError) as err:
        stub.Detect(detection_pb2.DetectRequest(images=[common_pb2.ImageInput(**kwargs)]), timeout=30)
    assert err.value.code().name == status, err.value.details()
    for text in expected:
        assert text in err.value.details(), err.value.details()
    assert health_status(thread.port) == "SERVING"
    assert health_status(thread.port, SERVICE) == "SERVING"


def test_enough_kinds_of_bad_image_give_invalid_argument():
    assert sum(1 for c in CASES if c[2] == "INVALID_ARGUMENT") >= 12


def test_a_batch_mixing_good_and_bad_answers_each_item(server):
    thread, stub, store = server
    images = [common_pb2.ImageInput(data=GOOD_PNG),
              common_pb2.ImageInput(data=b""),
              common_pb2.ImageInput(uri=store.uri("inputs/good.png")),
              common_pb2.ImageInput(data=png_claiming(50000, 50000)),
              common_pb2.ImageInput(data=GOOD_JPEG),
              common_pb2.ImageInput(uri=store.uri("inputs/missing.png")),
              common_pb2.ImageInput(data=GOOD_WEBP)]
    response = stub.Detect(detection_pb2.DetectRequest(images=images), timeout=30)
    by_index = {r.index: r for r in response.results}
    assert [r.index for r in response.results] == list(range(7))
    for i, (w, h) in {0: (64, 48), 2: (64, 48), 4: (64, 64), 6: (64, 64)}.items():
        assert not by_index[i].HasField("error") and (by_index[i].width, by_index[i].height) == (w, h)
    assert (by_index[1].error.code, by_index[1].error.field) == ("INVALID_ARGUMENT", "images[1].data")
    assert "over the limit of 100,000 pixels" in by_index[3].error.message
    assert (by_index[5].error.code, by_index[5].error.field) == ("NOT_FOUND", "images[5].uri")
    assert health_status(thread.port) == "SERVING"
    # a good call after all the bad ones is still answered
    again = stub.Detect(detection_pb2.DetectRequest(images=[common_pb2.ImageInput(data=GOOD_PNG)]), timeout=30)
    assert again.results[0].width == 64
