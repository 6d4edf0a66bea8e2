"""ImageLoader against a real LocalStore: inline and URI inputs, per-item errors naming
`images[i].data` / `images[i].uri`, bounded reads, and the protobuf helpers of core.convert."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from likeness.api.v1 import common_pb2
from likeness.core.convert import artifact_pb, item_error_pb
from likeness.core.errors import InvalidArgument, NotFound
from likeness.core.image_loader import ImageLoader
from likeness.core.images import ImageLimits, encode_png


def rgb(w=40, h=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def run(coro):
    return asyncio.run(coro)


def test_load_all_mixes_inline_uri_and_errors(tmp_store):
    a, b = rgb(seed=1), rgb(seed=2)
    stored = tmp_store.put("in/b.png", encode_png(b), "image/png")
    loader = ImageLoader(tmp_store, ImageLimits(), max_concurrency=2)
    inputs = [
        common_pb2.ImageInput(data=encode_png(a)),
        common_pb2.ImageInput(uri=stored.uri),
        common_pb2.ImageInput(data=b"not an image"),
        common_pb2.ImageInput(),
        common_pb2.ImageInput(uri=tmp_store.uri("in/missing.png")),
        common_pb2.ImageInput(uri="file:///etc/passwd"),
        common_pb2.ImageInput(uri=stored.uri.replace("in/b.png", "in/../../b.png")),
    ]
    out = run(loader.load_all(inputs))
    loader.close()
    assert [r.index for r in out] == list(range(7))
    assert np.array_equal(out[0].pixels, a) and out[0].source == "inline" and out[0].ok
    assert np.array_equal(out[1].pixels, b) and out[1].source == stored.uri
    assert isinstance(out[2].error, InvalidArgument) and out[2].error.field == "images[2].data"
    assert "plain text" in out[2].error.message
    assert out[3].error.field == "images[3]" and "neither data nor uri" in out[3].error.message
    assert out[3].source == "" and out[4].source.endswith("in/missing.png")
    assert isinstance(out[4].error, NotFound) and out[4].error.field == "images[4].uri"
    assert isinstance(out[5].error, InvalidArgument) and out[5].error.field == "images[5].uri"
    assert isinstance(out[6].error, InvalidArgument) and out[6].error.field == "images[6].uri"
    assert all(r.pixels is None for r in out[2:])


def test_load_one_raises_and_reads_uri_objects_bounded(tmp_store):
    big = encode_png(rgb(64, 64))
    stored = tmp_store.put("big.png", big, "image/png")
    loader = ImageLoader(tmp_store, ImageLimits(max_bytes=len(big) - 1))
    with pytest.raises(InvalidArgument, match=rf"^mask\.uri: image is over the limit of {len(big) - 1:,} bytes"):
        run(loader.load_one(common_pb2.ImageInput(uri=stored.uri), "mask"))
    with pytest.raises(InvalidArgument, match=r"^mask\.uri: is empty"):
        run(loader.load_one(common_pb2.ImageInput(uri=""), "mask"))
    ok = ImageLoader(tmp_store)
    assert run(ok.load_one(common_pb2.ImageInput(uri=stored.uri), "mask")).shape == (64, 64, 3)


def test_load_bytes_checks_format_without_decoding(tmp_store):
    png = encode_png(rgb())
    loader = ImageLoader(tmp_store)
    assert run(loader.load_bytes(common_pb2.ImageInput(data=png), "init_image")) == png
    with pytest.raises(InvalidArgument, match=r"^init_image\.data: unsupported image format: GIF"):
        run(loader.load_bytes(common_pb2.ImageInput(data=b"GIF89a" + b"\0" * 30), "init_image"))
    with pytest.raises(InvalidArgument, match=r"^init_image\.data: image is empty"):
        run(loader.load_bytes(common_pb2.ImageInput(data=b""), "init_image"))


def test_without_a_store_only_inline_images_are_accepted():
    loader = ImageLoader(None)
    with pytest.raises(InvalidArgument, match="no artifact store"):
        run(loader.load_one(common_pb2.ImageInput(uri="file:///x.png"), "image"))


def test_many_concurrent_loads_stay_ordered(tmp_store):
    images = [rgb(32, 32, seed=i) for i in range(24)]
    loader = ImageLoader(tmp_store, max_concurrency=3)
    out = run(loader.load_all([common_pb2.ImageInput(data=encode_png(x)) for x in images]))
    assert all(np.array_equal(r.pixels, x) for r, x in zip(out, images, strict=True))


def test_convert_helpers(tmp_store):
    obj = tmp_store.put("a/b.png", b"\x89PNG....", "image/png")
    pb = artifact_pb(obj)
    assert (pb.uri, pb.sha256, pb.media_type, pb.size_bytes, pb.data) == (obj.uri, obj.sha256, "image/png", 8, b"")
    assert artifact_pb(obj, b"xy").data == b"xy"
    err = item_error_pb(3, InvalidArgument("images[3].data", "image is empty (0 bytes)"))
    assert (err.index, err.code, err.field) == (3, "INVALID_ARGUMENT", "images[3].data")
    assert err.message == "images[3].data: image is empty (0 bytes)"
