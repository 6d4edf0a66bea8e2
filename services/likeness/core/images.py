"""Defensive image decoding and fast encoding.

`decode_image` turns untrusted bytes into an HxWx3 uint8 RGB array or raises
`InvalidArgument(field, message)` naming the measured value and the limit. The checks run
cheapest first, and nothing is decoded before the header's dimensions pass the pixel limit:

1. empty data; more bytes than `max_bytes`;
2. the format, sniffed from magic bytes: PNG, JPEG and WebP are accepted; GIF, BMP, TIFF, ZIP,
   PDF, HEIF/AVIF, ICO, plain text and anything else are rejected by name;
3. the header (`Image.open` reads only the header): width x height over `max_pixels`, or a side
   under `min_side`; Pillow's own bomb guard (`DecompressionBombError`) is caught too;
4. a full decode (`load()`), so truncated or corrupt data fails here rather than later;
5. EXIF orientation is applied, then the mode is normalised to RGB (`to_rgb`).

Mode rule (documented in docs/api/images.md):
  RGB -> as is;  L / 1 -> grey replicated to R=G=B;  P -> palette lookup;
  LA / RGBA / PA / La / RGBa, and P or L or RGB with a transparency key -> composited over WHITE
  (out = (c*a + 255*(255-a)) / 255, rounded);
  I;16* / I (16-bit grey) -> top 8 bits (v >> 8, clipped to 0..255), then replicated;
  CMYK / YCbCr / LAB / HSV -> Pillow's conversion to RGB.
Animated PNG/WebP: the first frame.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from likeness.core.errors import InvalidArgument

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")

# PNG compression level: 1 (zlib's fastest) encodes a 1024x1024 photo ~5x faster than Pillow's
# default 6 (time ratio 0.21-0.23) for a file ~13% larger; on noise-like images every level costs the
# same (bench/images.py, docs/benchmarks.md). Images are encoded on the request path and moved over
# a LAN, so encode time matters more than 13% of bytes. Callers archiving images may pass 6 or 9.
PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 92


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on one input image. Defaults match CommonSettings."""

    max_bytes: int = 30 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16

    @classmethod
    def from_settings(cls, settings) -> ImageLimits:
        limits = cls(settings.max_image_bytes, settings.max_image_pixels, settings.min_image_side)
        allow_pillow_pixels(limits.max_pixels)
        return limits


def allow_pillow_pixels(max_pixels: int) -> None:
    """Pillow raises DecompressionBombError above 2x Image.MAX_IMAGE_PIXELS (89.5 MP by default)
    and warns above 1x. Our own limit is checked first; when it is configured higher than Pillow's,
    Pillow's process-wide guard is raised to match (never lowered) so it does not undercut ours."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


# --- format sniffing -----------------------------------------------------------------------------

_REJECTED_MAGIC: list[tuple[bytes, str]] = [
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"PK\x05\x06", "ZIP archive"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x1f\x8b", "gzip archive"),
    (b"8BPS", "Photoshop PSD"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"qoif", "QOI"),
]


def sniff_format(data: bytes) -> str:
    """'PNG', 'JPEG' or 'WEBP' for accepted data; otherwise a short name of what it is."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("latin-1")
        return "AVIF" if brand.startswith("avi") else f"ISO media ({brand.strip()!r}, e.g. HEIC)"
    for magic, name in _REJECTED_MAGIC:
        if data.startswith(magic):
            return name
    if _looks_like_text(data[:512]):
        # SVG is text too, but it is an image format: name it (it is rejected all the same)
        return "SVG" if re.search(rb"<svg[\s>]", data[:4096].lower()) else "plain text"
    return "unrecognised"


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the 512-byte boundary is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(text) and all(c.isprintable() or c in "\t\r\n\f" for c in text)


def _describe_head(data: bytes) -> str:
    if _looks_like_text(data[:512]):
        return f"starts with {data[:24].decode('utf-8', 'replace')!r}"
    return f"first bytes {data[:8].hex(' ')}"


# --- decoding -------------------------------------------------------------------------------------

def _px(pixels: int) -> str:
    """Exact counts: a rounded '40.0 MP over the limit of 40.0 MP' would explain nothing."""
    return f"{pixels:,} pixels"


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def decode_image(data: bytes, field: str, limits: ImageLimits | None = None) -> np.ndarray:
    """Untrusted PNG/JPEG/WebP bytes -> HxWx3 uint8 RGB (C-contiguous), or InvalidArgument."""
    limits = limits or ImageLimits()
    size = len(data)
    if size == 0:
        raise InvalidArgument(field, "image is empty (0 bytes)")
    if size > limits.max_bytes:
        raise InvalidArgument(field, f"image is {size:,} bytes, over the limit of {limits.max_bytes:,} bytes")
    fmt = sniff_format(data)
    if fmt not in ACCEPTED_FORMATS:
        seen = {"unrecognised": f"unrecognised data ({_describe_head(data)})",
                "plain text": f"plain text ({_describe_head(data)})"}.get(fmt, fmt)
        raise InvalidArgument(field, f"unsupported image format: {seen}; accepted: PNG, JPEG, WebP")

    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])  # parses the header only
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (2 x Image.MAX_IMAGE_PIXELS) fired inside open(): same message as ours
        dims = header_size(fmt, data)
        if dims is not None:
            width, height = dims
            measured = f"{width}x{height} ({_px(width * height)})"
        else:
            m = _BOMB_PIXELS.search(str(exc))
            measured = f"{_px(int(m.group(1)))}" if m else "too many pixels"
        raise InvalidArgument(field, f"image is {measured}, over the limit of {_px(limits.max_pixels)}") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure of untrusted data is bad input
        raise InvalidArgument(field, f"{fmt} header is corrupt or truncated ({_short(exc)})") from None

    with img:
        width, height = img.size
        pixels = width * height
        if pixels > limits.max_pixels:
            raise InvalidArgument(field, f"image is {width}x{height} ({_px(pixels)}), over the limit "
                                         f"of {_px(limits.max_pixels)}")
        if min(width, height) < limits.min_side:
            raise InvalidArgument(field, f"image is {width}x{height}, a side under the minimum of "
                                         f"{limits.min_side} px")
        try:
            img.load()  # a full decode: truncated or corrupt data fails here, not later
        except Image.DecompressionBombError:
            raise InvalidArgument(field, f"image is {width}x{height} ({_px(pixels)}), over the limit "
                                         f"of {_px(limits.max_pixels)}") from None
        except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, ValueError, zlib.error ...
            raise InvalidArgument(field, f"{fmt} data is truncated or corrupt ({_short(exc)})") from None
        try:
            oriented = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not reject good pixels
            oriented = img
        return to_rgb(oriented)


def header_size(fmt: str, data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG or WebP header without Pillow, or None when the
    header does not say (used for the bomb message, where Pillow's own guard gives pixels only)."""
    if fmt == "PNG" and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if fmt == "JPEG":
        return _jpeg_size(data)
    if fmt == "WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8 ":
            return struct.unpack("<H", data[26:28])[0] & 0x3FFF, struct.unpack("<H", data[28:30])[0] & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The frame size from the first SOFn marker (segments walked by their lengths)."""
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def _short(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "Pillow cannot parse it"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any decoded Pillow image -> HxWx3 uint8 RGB by the module's documented mode rule."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(img).astype(np.int64) >> 8
        grey = np.clip(grey, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "F":
        grey = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    has_alpha = mode in ("LA", "RGBA", "PA", "La", "RGBa") or "transparency" in img.info
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        rgb, alpha = rgba[..., :3], rgba[..., 3:4]
        out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
        return np.ascontiguousarray(out.astype(np.uint8))
    if mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8, copy=True)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header alone, or None when it cannot be read."""
    try:
        with Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS)) as img:
            return img.size
    except Exception:  # noqa: BLE001
        return None


# --- encoding -------------------------------------------------------------------------------------

def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def encode_png(rgb: np.ndarray, parameters: str | None = None, request: dict | None = None,
               compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """HxWx3 uint8 -> PNG bytes; with `parameters` (A1111 text) and/or `request` (JSON) chunks.

    The pixels are encoded once; metadata is spliced in after IHDR (pngmeta), so the IDAT bytes
    of an image do not depend on its metadata."""
    buf = io.BytesIO()
    Image.fromarray(_check_rgb(rgb), "RGB").save(buf, "PNG", compress_level=compress_level)
    png = buf.getvalue()
    if parameters is None and request is None:
        return png
    from likeness.core.pngmeta import add_png_metadata

    return add_png_metadata(png, parameters, request)


def encode_mask_png(mask: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """HxW uint8 (0..255) or bool mask -> single-channel (mode L) PNG; True becomes 255."""
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {mask.shape}")
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8) * 255
    elif mask.dtype != np.uint8:
        raise ValueError(f"expected a uint8 or bool mask, got {mask.dtype}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask), "L").save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """HxWx3 uint8 -> baseline JPEG (4:2:0), for previews and thumbnails, never for masks."""
    buf = io.BytesIO()
    Image.fromarray(_check_rgb(rgb), "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()
