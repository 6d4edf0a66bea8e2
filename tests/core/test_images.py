"""decode_image: every accepted mode normalised by the documented rule; every bad input rejected with
INVALID_ARGUMENT naming the field, the measured value and the limit. encode_*: round trips."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from likeness.core.errors import InvalidArgument
from likeness.core.images import (
    ImageLimits,
    decode_image,
    encode_jpeg,
    encode_mask_png,
    encode_png,
    image_size,
    sniff_format,
)

FIELD = "images[0].data"


def rgb_image(w=48, h=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG with a valid IHDR claiming width x height and a tiny IDAT (a decompression bomb's header)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def rejects(data: bytes, limits: ImageLimits | None = None) -> str:
    with pytest.raises(InvalidArgument) as err:
        decode_image(data, FIELD, limits or ImageLimits())
    assert err.value.field == FIELD
    assert str(err.value).startswith(FIELD + ": ")
    return str(err.value)


# --- accepted formats and the mode rule ------------------------------------------------------------

def test_png_round_trip_is_lossless():
    a = rgb_image()
    out = decode_image(encode_png(a), FIELD)
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3) and out.flags.c_contiguous
    assert np.array_equal(out, a)


def test_jpeg_and_webp_decode_close_to_source():
    a = np.full((32, 48, 3), (200, 40, 90), np.uint8)
    for data in (encode_jpeg(a), pil_bytes(Image.fromarray(a), "WEBP", quality=95)):
        out = decode_image(data, FIELD)
        assert out.shape == (32, 48, 3)
        assert np.abs(out.astype(int) - a).max() <= 6


def test_grey_is_replicated():
    g = np.arange(32 * 48, dtype=np.uint32).reshape(32, 48) % 256
    out = decode_image(pil_bytes(Image.fromarray(g.astype(np.uint8), "L"), "PNG"), FIELD)
    assert np.array_equal(out[..., 0], g) and np.array_equal(out[..., 1], g) and np.array_equal(out[..., 2], g)


def test_alpha_is_composited_over_white():
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :16, 3] = 0  # transparent -> white
    rgba[:, 16:32, 3] = 255  # opaque -> its colour
    rgba[:, 32:, 3] = 128  # half -> between
    out = decode_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"), FIELD)
    assert (out[:, :16] == 255).all()
    assert (out[:, 16:32] == (200, 0, 0)).all()
    expected = [(200 * 128 + 255 * 127 + 127) // 255, (255 * 127 + 127) // 255, (255 * 127 + 127) // 255]
    assert (out[:, 32:] == expected).all()
    la = Image.fromarray(np.stack([np.full((32, 48), 10, np.uint8), np.zeros((32, 48), np.uint8)], -1), "LA")
    assert (decode_image(pil_bytes(la, "PNG"), FIELD) == 255).all()


def test_palette_with_and_without_transparency():
    src = Image.fromarray(rgb_image(seed=3)).quantize(16)
    plain = decode_image(pil_bytes(src, "PNG"), FIELD)
    assert np.array_equal(plain, np.asarray(src.convert("RGB")))
    palette_index = int(np.asarray(src)[0, 0])
    keyed = decode_image(pil_bytes(src, "PNG", transparency=palette_index), FIELD)
    hole = np.asarray(src) == palette_index
    assert (keyed[hole] == 255).all()
    assert np.array_equal(keyed[~hole], plain[~hole])


def test_16_bit_grey_keeps_the_top_byte():
    g = (np.arange(32 * 48, dtype=np.uint32).reshape(32, 48) * 41).astype(np.uint16)
    data = pil_bytes(Image.fromarray(g), "PNG")
    out = decode_image(data, FIELD)
    assert np.array_equal(out[..., 0], (g >> 8).astype(np.uint8))
    assert np.array_equal(out[..., 2], out[..., 0])


def test_cmyk_jpeg_is_converted():
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(pil_bytes(cmyk, "JPEG", quality=95), FIELD)
    assert out.shape == (30, 40, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_exif_orientation_is_applied():
    img = Image.fromarray(rgb_image(w=40, h=20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    out = decode_image(pil_bytes(img, "JPEG", exif=exif.tobytes()), FIELD)
    assert out.shape == (40, 20, 3)


def test_first_frame_of_animated_webp():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = pil_bytes(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    out = decode_image(data, FIELD)
    assert (out == (255, 0, 0)).all()


# --- rejections --------------------------------------------------------------------------------------

def test_empty_and_oversized():
    assert "empty (0 bytes)" in rejects(b"")
    data = encode_png(rgb_image())
    msg = rejects(data, ImageLimits(max_bytes=100))
    assert f"{len(data):,} bytes, over the limit of 100 bytes" in msg


@pytest.mark.parametrize("data,name", [
    (b"GIF89a" + b"\0" * 40, "GIF"),
    (pil_bytes(Image.new("RGB", (32, 32)), "BMP"), "BMP"),
    (pil_bytes(Image.new("RGB", (32, 32)), "TIFF"), "TIFF"),
    (b"%PDF-1.7\n", "PDF"),
    (b"hello, this is not an image\n", "plain text"),
    (b"\x00\x00\x00\x1cftypavif" + b"\0" * 20, "AVIF"),
    (bytes(range(7, 71)), "unrecognised"),
])
def test_unsupported_formats_are_named(data, name):
    msg = rejects(data)
    assert f"unsupported image format: {name}" in msg and "accepted: PNG, JPEG, WebP" in msg


def test_zip_and_real_gif_are_named():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.png", encode_png(rgb_image()))
    assert "ZIP archive" in rejects(buf.getvalue())
    assert "GIF" in rejects(pil_bytes(Image.new("RGB", (32, 32)), "GIF"))


def test_svg_is_named_as_svg_not_plain_text():
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>\n'
    msg = rejects(svg)
    assert "unsupported image format: SVG;" in msg and "plain text" not in msg
    assert "unsupported image format: plain text" in rejects(b"an <svgish> word is not an svg tag\n")


def test_header_over_pixel_limit_is_rejected_before_decoding():
    msg = rejects(png_header_only(50000, 50000))
    assert "50000x50000 (2,500,000,000 pixels), over the limit of 40,000,000 pixels" in msg


def test_pillow_bomb_guard_is_reported_as_over_the_limit():
    # past 2 x Image.MAX_IMAGE_PIXELS Pillow refuses in open(); still a clean, measured message
    msg = rejects(png_header_only(100000, 100000))
    assert "100000x100000 (10,000,000,000 pixels), over the limit of 40,000,000 pixels" in msg
    jpeg = bytearray(encode_jpeg(rgb_image(64, 64)))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)  # SOF0: height, width
    # the JPEG's own SOF header gives width x height (Pillow's guard reports pixels only)
    assert "image is 65000x65000 (4,225,000,000 pixels), over the limit of 40,000,000 pixels" in rejects(bytes(jpeg))
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 9000, 9000)  # 81 MP: under Pillow's guard, over ours
    assert "9000x9000 (81,000,000 pixels), over the limit of 40,000,000 pixels" in rejects(bytes(jpeg))


def test_valid_image_over_a_small_pixel_limit():
    msg = rejects(encode_png(rgb_image(64, 64)), ImageLimits(max_pixels=1000))
    assert "64x64 (4,096 pixels), over the limit of 1,000 pixels" in msg


def test_too_small():
    msg = rejects(encode_png(rgb_image(1, 1)))
    assert "1x1, a side under the minimum of 16 px" in msg


def test_truncated_and_corrupt():
    png = encode_png(rgb_image(64, 64))
    assert "PNG data is truncated or corrupt" in rejects(png[: len(png) // 2])
    assert "PNG header is corrupt or truncated" in rejects(png[:20])
    jpeg = encode_jpeg(rgb_image(64, 64))
    assert "JPEG" in rejects(jpeg[:3] + b"\x00" * 200)
    assert "JPEG data is truncated or corrupt" in rejects(jpeg[: len(jpeg) // 3])
    webp = pil_bytes(Image.fromarray(rgb_image(64, 64)), "WEBP")
    assert "WEBP" in rejects(webp[: len(webp) // 2])
    corrupt = bytearray(png)
    corrupt[60:80] = b"\xff" * 20  # inside IDAT's zlib stream
    assert "PNG" in rejects(bytes(corrupt))


def test_sniff_and_header_size():
    png = encode_png(rgb_image())
    assert sniff_format(png) == "PNG" and sniff_format(encode_jpeg(rgb_image())) == "JPEG"
    assert image_size(png) == (48, 32) and image_size(b"nope") is None


# --- encoders -----------------------------------------------------------------------------------------

def test_mask_png_is_single_channel():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True
    with Image.open(io.BytesIO(encode_mask_png(mask))) as img:
        assert img.mode == "L"
        arr = np.asarray(img)
    assert set(np.unique(arr)) == {0, 255} and arr[6, 6] == 255
    with pytest.raises(ValueError):
        encode_mask_png(np.zeros((2, 2, 3), np.uint8))


def test_encode_rejects_wrong_arrays():
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), np.float32))


def test_16_bit_rgb_keeps_the_top_byte():
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    px = (np.arange(16 * 16 * 3, dtype=np.uint32).reshape(16, 16, 3) * 211 % 65536).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in px)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    assert np.array_equal(decode_image(data, FIELD), (px.astype(np.uint32) >> 8).astype(np.uint8))
