"""Small pieces the workflows share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np

from likeness.api.v1 import common_pb2, detection_pb2, embedding_pb2

T = TypeVar("T")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
REASONS = {
    detection_pb2.REJECTION_REASON_NO_FACE: "no_face",
    detection_pb2.REJECTION_REASON_MULTIPLE_FACES: "multiple_faces",
    detection_pb2.REJECTION_REASON_FACE_TOO_SMALL: "face_too_small",
    detection_pb2.REJECTION_REASON_TURNED_AWAY: "turned_away",
    detection_pb2.REJECTION_REASON_LOW_CONFIDENCE: "low_confidence",
    detection_pb2.REJECTION_REASON_LOW_QUALITY: "low_quality",
    detection_pb2.REJECTION_REASON_BLURRY: "blurry",
    detection_pb2.REJECTION_REASON_EYES_CLOSED: "eyes_closed",
    detection_pb2.REJECTION_REASON_FACE_CUT_OFF: "face_cut_off",
}


def uri_input(uri: str) -> common_pb2.ImageInput:
    return common_pb2.ImageInput(uri=uri)


async def stored_uri(ctx, image: common_pb2.ImageInput) -> str:
    """An ImageInput as a store URI (inline bytes are stored once, content-addressed)."""
    if image.WhichOneof("source") == "uri":
        return image.uri
    from likeness.core.workid import sha256_hex

    data = image.data
    obj = await asyncio.to_thread(ctx.store.put, f"inputs/{sha256_hex(data)}", data, "application/octet-stream")
    return obj.uri


def batched(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


async def gather_ordered(fns: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Runs the calls concurrently (the service clients bound the concurrency) and keeps order."""
    return list(await asyncio.gather(*(fn() for fn in fns)))


def vector(v: common_pb2.Vector) -> np.ndarray:
    return np.asarray(v.values, dtype=np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b / (na * nb)) if na and nb else 0.0


def labeled(ids: Sequence[str], vectors: Sequence[common_pb2.Vector]) -> list[embedding_pb2.LabeledVector]:
    return [embedding_pb2.LabeledVector(id=i, vector=v) for i, v in zip(ids, vectors, strict=True)]


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:80]
