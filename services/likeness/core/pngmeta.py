"""PNG text metadata: the AUTOMATIC1111 `parameters` chunk and a `likeness` JSON chunk.

`parameters` is what AUTOMATIC1111 writes and what A1111's "PNG Info", ComfyUI's and Civitai's
readers parse:

    a portrait of a woman, soft light
    Negative prompt: blurry, lowres
    Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 1024x1024, Model hash: 31e35c80fc, Model: sdxl,
    Lora hashes: "anna: 3c1f07ab9d2e"

The hashes are computed as A1111 computes them, so Civitai and A1111 match them to files:
`Model hash` is the first 10 hex digits of the sha256 of a single-file checkpoint (omitted, with
the model name kept, when the model is a diffusers folder, which A1111 cannot hash); `Lora hashes`
holds each adapter's first 12 hex digits of the sha256 of the .safetensors payload after its header
(A1111's "addnet" hash, which ignores metadata edits).

The `likeness` chunk holds the full request as canonical JSON, so an image alone says how to make
it again. Chunks are spliced in right after IHDR with their CRCs computed by zlib.crc32: the
pixels are never re-encoded, so adding metadata to a 4 MB PNG costs microseconds and the IDAT
bytes stay identical. Existing chunks with the same keyword are replaced.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib

from likeness.core.errors import InvalidArgument
from likeness.core.workid import canonical_json

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PARAMETERS_KEY = "parameters"
REQUEST_KEY = "likeness"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
MAX_TEXT_BYTES = 8 * 1024 * 1024  # a compressed text chunk may not inflate past this (zip bombs)

# A1111's parser (modules/infotext_utils.py): `key: value` pairs, values optionally JSON-quoted.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_KEY = re.compile(r"^\w[\w \-/]*\w$|^\w$")


# --- A1111's hashes -------------------------------------------------------------------------------

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


def a1111_model_hash(files, checksums: dict[str, str]) -> str:
    """`Model hash` of a model: A1111's short hash (sha256 of the file, first 10 hex) when the model
    is one checkpoint file, "" (the field is then omitted) when it is a folder of files."""
    weights = [f for f in files if f.endswith(CHECKPOINT_SUFFIXES)]
    if len(weights) != 1 or len(files) != 1 or weights[0] not in checksums:
        return ""
    return checksums[weights[0]][:10]


def addnet_hash(safetensors: bytes) -> str:
    """sha256 of a .safetensors file's tensor payload (everything after the 8-byte length and the
    JSON header), as A1111 and sd-scripts compute it for LoRA files; A1111 shows its first 12 hex."""
    n = int.from_bytes(safetensors[:8], "little")
    return hashlib.sha256(memoryview(safetensors)[8 + n:]).hexdigest()


def lora_hashes(named: list[tuple[str, str]]) -> str:
    """The `Lora hashes` value: `name: shorthash, ...`. A1111 splits it on ',' and ':', so those
    characters are replaced in names; a repeated name gets a numeric suffix."""
    seen: dict[str, int] = {}
    parts = []
    for name, full_hash in named:
        clean = re.sub(r"[,:\s]+", "_", name).strip("_") or "lora"
        seen[clean] = seen.get(clean, 0) + 1
        if seen[clean] > 1:
            clean = f"{clean}_{seen[clean]}"
        parts.append(f"{clean}: {full_hash[:12]}")
    return ", ".join(parts)


# --- the A1111 `parameters` text ------------------------------------------------------------------

def _quote(value: str) -> str:
    """A1111's rule: JSON-quote a value that holds a comma, colon, newline or quote."""
    if any(c in value for c in ',:\n"'):
        return json.dumps(value, ensure_ascii=False)
    return value


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_parameters(prompt: str, negative_prompt: str, steps: int, sampler: str, cfg_scale: float,
                      seed: int, width: int, height: int, model: str, model_hash: str = "",
                      extra: dict | None = None) -> str:
    """The A1111 `parameters` text. `extra` adds `Key: value` pairs at the end of the last line
    (for example {"Denoising strength": 0.4, "Lora hashes": "a: 1f2e"}); keys must be words,
    spaces, '-' or '/' (A1111's grammar), values are quoted when they need it."""
    pairs: list[tuple[str, str]] = [("Steps", str(steps)), ("Sampler", sampler), ("CFG scale", _number(cfg_scale)),
                                    ("Seed", str(seed)), ("Size", f"{width}x{height}")]
    if model_hash:
        pairs.append(("Model hash", model_hash))
    if model:
        pairs.append(("Model", model))
    for key, value in (extra or {}).items():
        if not _KEY.match(key) or key in ("Prompt", "Negative prompt"):
            raise ValueError(f"parameters key {key!r} is not an A1111 key (word characters, spaces, '-', '/')")
        pairs.append((key, _number(value) if isinstance(value, int | float) else str(value)))
    lines = [prompt.strip()]
    if negative_prompt.strip():
        lines.append(f"Negative prompt: {negative_prompt.strip()}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, str]:
    """A1111 `parameters` text -> {"prompt", "negative_prompt", "Steps", "Sampler", ...}; values
    are strings as written (unquoted). Follows A1111's parser: the last line is the settings line
    when it holds at least 3 `key: value` pairs; lines are stripped."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    result = {"prompt": "\n".join(prompt), "negative_prompt": "\n".join(negative)}
    for key, value in _PARAM.findall(last):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        result[key] = value
    return result


# --- PNG chunks -----------------------------------------------------------------------------------

def _chunks(png: bytes, field: str) -> list[tuple[bytes, bytes, bytes]]:
    """[(type, data, raw chunk bytes), ...] up to and including IEND; InvalidArgument when the
    structure is broken."""
    if not png.startswith(PNG_SIGNATURE):
        raise InvalidArgument(field, "not a PNG (bad signature)")
    out, pos, end = [], len(PNG_SIGNATURE), len(png)
    while pos + 12 <= end:
        length, ctype = struct.unpack(">I4s", png[pos:pos + 8])
        if pos + 12 + length > end:
            raise InvalidArgument(field, f"PNG chunk {ctype!r} at byte {pos} claims {length} bytes, past the end")
        out.append((ctype, png[pos + 8:pos + 8 + length], png[pos:pos + 12 + length]))
        pos += 12 + length
        if ctype == b"IEND":
            return out
    raise InvalidArgument(field, "PNG is truncated (no IEND chunk)")


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def text_chunk(keyword: str, text: str) -> bytes:
    """tEXt when the text is Latin-1 (what A1111 writes for ASCII prompts), else UTF-8 iTXt."""
    key = keyword.encode("latin-1")
    if not 1 <= len(key) <= 79:
        raise ValueError(f"PNG keyword must be 1-79 bytes, got {len(key)}")
    try:
        return _chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # compression flag 0, method 0, empty language tag and translated keyword
        return _chunk(b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8"))


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, MAX_TEXT_BYTES)
    if d.unconsumed_tail:
        raise ValueError(f"text chunk inflates past {MAX_TEXT_BYTES} bytes")
    return out


def _decode_text(ctype: bytes, data: bytes) -> tuple[str, str]:
    key, _, rest = data.partition(b"\0")
    keyword = key.decode("latin-1")
    if ctype == b"tEXt":
        return keyword, rest.decode("latin-1")
    if ctype == b"zTXt":
        return keyword, _inflate(rest[1:]).decode("latin-1")
    compressed, _method = rest[0], rest[1]
    _lang, _, rest = rest[2:].partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    return keyword, (_inflate(text) if compressed else text).decode("utf-8")


def read_png_metadata(png: bytes, field: str = "image") -> dict[str, str]:
    """Every tEXt, zTXt and iTXt chunk as {keyword: text} (the first of a repeated keyword wins;
    an undecodable text chunk is skipped)."""
    meta: dict[str, str] = {}
    for ctype, data, _raw in _chunks(png, field):
        if ctype in TEXT_CHUNKS:
            try:
                key, text = _decode_text(ctype, data)
            except (ValueError, IndexError, UnicodeDecodeError, zlib.error):
                continue
            meta.setdefault(key, text)
    return meta


def read_request(png: bytes) -> dict | None:
    """The request stored in the `likeness` chunk, or None."""
    text = read_png_metadata(png).get(REQUEST_KEY)
    return json.loads(text) if text else None


def add_png_metadata(png: bytes, parameters: str | None, request: dict | None = None,
                     field: str = "image") -> bytes:
    """`png` with a `parameters` chunk and/or a `likeness` JSON chunk right after IHDR; existing
    text chunks with those keywords are dropped; every other chunk (IDAT included) is copied
    byte for byte."""
    chunks = _chunks(png, field)
    if chunks[0][0] != b"IHDR":
        raise InvalidArgument(field, "PNG does not start with IHDR")
    new: list[bytes] = []
    if parameters is not None:
        new.append(text_chunk(PARAMETERS_KEY, parameters))
    if request is not None:
        new.append(text_chunk(REQUEST_KEY, canonical_json(request).decode("utf-8")))
    replaced = {PARAMETERS_KEY if parameters is not None else None, REQUEST_KEY if request is not None else None}
    out = [PNG_SIGNATURE, chunks[0][2], *new]
    for ctype, data, raw in chunks[1:]:
        if ctype in TEXT_CHUNKS and data.partition(b"\0")[0].decode("latin-1") in replaced:
            continue
        out.append(raw)  # copied as is, CRC included
    return b"".join(out)
