"""PNG metadata: A1111 `parameters` text round-trips through our parser and A1111's grammar; chunks
are spliced in without touching IDAT, read back by Pillow, and replace older chunks."""

from __future__ import annotations

import io
import json
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from likeness.core.errors import InvalidArgument
from likeness.core.images import encode_png
from likeness.core.pngmeta import (
    _chunks,
    add_png_metadata,
    format_parameters,
    parse_parameters,
    read_png_metadata,
    read_request,
)

REQUEST = {"prompt": "a portrait", "seed": 7, "steps": 20, "lora": [{"name": "anna", "scale": 0.8}]}


def params(**kw) -> str:
    args = dict(prompt="a portrait of a woman, soft light", negative_prompt="blurry, lowres", steps=20,
                sampler="DPM++ 2M", cfg_scale=7.0, seed=1, width=1024, height=1024, model="sdxl-base",
                model_hash="31e35c80fc")
    args.update(kw)
    return format_parameters(**args)


def png(seed=0) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8))


def idat(data: bytes) -> list[bytes]:
    return [raw for t, _, raw in _chunks(data, "x") if t == b"IDAT"]


def test_format_matches_a1111_layout():
    text = params(extra={"Denoising strength": 0.4, "Lora hashes": "anna: 1f2e3d"})
    assert text.split("\n") == [
        "a portrait of a woman, soft light",
        "Negative prompt: blurry, lowres",
        'Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 1024x1024, Model hash: 31e35c80fc, '
        'Model: sdxl-base, Denoising strength: 0.4, Lora hashes: "anna: 1f2e3d"',
    ]
    assert "Negative prompt" not in params(negative_prompt="")
    assert "CFG scale: 7.5," in params(cfg_scale=7.5)
    assert "Model hash" not in params(model_hash="")


def test_parse_round_trips():
    text = params(prompt="line one\nline two", extra={"Lora hashes": 'anna: 1f, "q"', "Version": "likeness 0.1"})
    got = parse_parameters(text)
    assert got["prompt"] == "line one\nline two"
    assert got["negative_prompt"] == "blurry, lowres"
    assert got["Steps"] == "20" and got["Sampler"] == "DPM++ 2M" and got["CFG scale"] == "7"
    assert got["Seed"] == "1" and got["Size"] == "1024x1024" and got["Model"] == "sdxl-base"
    assert got["Model hash"] == "31e35c80fc" and got["Lora hashes"] == 'anna: 1f, "q"'
    assert got["Version"] == "likeness 0.1"
    # a text without a settings line is all prompt
    assert parse_parameters("just a prompt") == {"prompt": "just a prompt", "negative_prompt": ""}


def test_bad_extra_keys_are_refused():
    with pytest.raises(ValueError):
        params(extra={"bad:key": 1})
    with pytest.raises(ValueError):
        params(extra={"Negative prompt": "x"})


def test_chunks_are_read_by_pillow_and_idat_is_unchanged():
    plain = png()
    text = params()
    out = add_png_metadata(plain, text, REQUEST)
    assert idat(out) == idat(plain)
    with Image.open(io.BytesIO(out)) as img:
        img.load()  # CRCs are verified by Pillow while reading
        assert img.info["parameters"] == text
        assert json.loads(img.info["likeness"]) == REQUEST
        pixels = np.asarray(img)
    with Image.open(io.BytesIO(plain)) as img:
        assert np.array_equal(pixels, np.asarray(img))
    assert [t for t, _, _ in _chunks(out, "x")][:3] == [b"IHDR", b"tEXt", b"tEXt"]
    assert read_request(out) == REQUEST and read_png_metadata(out)["parameters"] == text


def test_non_latin1_prompt_goes_to_itxt():
    text = params(prompt="портрет, 笑顔")
    out = add_png_metadata(png(), text, {"prompt": "портрет"})
    assert b"iTXt" in [t for t, _, _ in _chunks(out, "x")]
    with Image.open(io.BytesIO(out)) as img:
        assert img.info["parameters"] == text
    assert read_png_metadata(out)["parameters"] == text
    assert read_request(out) == {"prompt": "портрет"}


def test_existing_chunks_are_replaced_and_others_kept():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "old")
    info.add_text("Software", "other tool")
    info.add_text("likeness", "{}", zip=True)  # zTXt
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(buf, "PNG", pnginfo=info)
    before = buf.getvalue()
    assert read_png_metadata(before) == {"parameters": "old", "Software": "other tool", "likeness": "{}"}
    out = add_png_metadata(before, "new", {"a": 1})
    meta = read_png_metadata(out)
    assert meta == {"parameters": "new", "likeness": '{"a":1}', "Software": "other tool"}
    twice = add_png_metadata(out, "newer", None)
    assert read_png_metadata(twice)["parameters"] == "newer" and read_request(twice) == {"a": 1}
    assert idat(twice) == idat(before)


def test_encode_png_with_metadata_keeps_pixels_identical():
    a = np.random.default_rng(5).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    with_meta = encode_png(a, parameters=params(), request=REQUEST)
    assert idat(with_meta) == idat(encode_png(a))
    assert read_request(with_meta) == REQUEST


def test_compressed_itxt_is_read_and_bombs_are_skipped():
    info = PngImagePlugin.PngInfo()
    info.add_itxt("note", "ünïcode " * 50, zip=True)
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "PNG", pnginfo=info)
    assert read_png_metadata(buf.getvalue())["note"] == "ünïcode " * 50
    bomb = zlib.compress(b"a" * (9 * 1024 * 1024), 9)
    from likeness.core.pngmeta import _chunk

    data = buf.getvalue()
    at = data.index(b"IEND") - 4
    evil = data[:at] + _chunk(b"zTXt", b"bomb\0\0" + bomb) + data[at:]
    assert "bomb" not in read_png_metadata(evil)


def test_malformed_png_is_invalid_argument():
    with pytest.raises(InvalidArgument, match="^image: not a PNG"):
        add_png_metadata(b"GIF89a", "x", None)
    with pytest.raises(InvalidArgument, match="past the end"):
        read_png_metadata(png()[:50])
    with pytest.raises(InvalidArgument, match="no IEND"):
        read_png_metadata(png()[:-12])
