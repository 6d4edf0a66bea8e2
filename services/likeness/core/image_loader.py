"""Loads the `ImageInput`s of a request (inline bytes or store URIs) into RGB arrays.

Servicers call this; it is the one place that knows both protobuf `ImageInput` and the store.
Each item fails on its own: `load_all` returns a `LoadedImage` with `error` set (field
`images[3].data` or `images[3].uri`) and its batch-mates are still decoded. Store reads and
decoding run off the event loop on a small thread pool owned by the loader, which also bounds how
many images are read and decoded at once across all concurrent requests (memory and CPU).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from likeness.core import tracing
from likeness.core.errors import InvalidArgument, LikenessError
from likeness.core.images import ACCEPTED_FORMATS, ImageLimits, decode_image, sniff_format


@dataclass
class LoadedImage:
    index: int
    pixels: np.ndarray | None  # HxWx3 uint8 RGB, None when `error` is set
    error: LikenessError | None
    source: str  # the URI, "inline" for bytes sent in the request, "" when neither was set

    @property
    def ok(self) -> bool:
        return self.error is None


class ImageLoader:
    def __init__(self, store, limits: ImageLimits | None = None, max_concurrency: int = 8):
        """`store` is a core.store.ArtifactStore (or None: then only inline images are accepted).
        Create one per service (in create_service) and call `close()` from Service.shutdown."""
        self.store = store
        self.limits = limits or ImageLimits()
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="image-loader")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn, *args):
        # bound to the caller's context, so spans opened on the pool belong to the caller's trace
        return await asyncio.get_running_loop().run_in_executor(self._pool, tracing.bind(fn), *args)

    async def load_all(self, inputs: Sequence, field: str = "images") -> list[LoadedImage]:
        """One LoadedImage per input, in order; never raises for a bad item."""
        return list(await asyncio.gather(*(self._load_item(i, pb, field) for i, pb in enumerate(inputs))))

    async def _load_item(self, index: int, pb_input, field: str) -> LoadedImage:
        item_field = f"{field}[{index}]"
        source = {"uri": pb_input.uri, "data": "inline"}.get(pb_input.WhichOneof("source"), "")
        try:
            with tracing.span("image.load", {"image.index": index, "image.source": source[:200]}):
                pixels = await self.load_one(pb_input, item_field)
        except LikenessError as exc:
            return LoadedImage(index, None, exc, source)
        return LoadedImage(index, pixels, None, source)

    async def load_one(self, pb_input, field: str) -> np.ndarray:
        """One ImageInput -> HxWx3 uint8 RGB; raises InvalidArgument / NotFound naming
        `<field>.data` or `<field>.uri`."""
        data, sub = await self._raw(pb_input, field)
        return await self._run(self._decode, data, sub)

    def _decode(self, data: bytes, field: str) -> np.ndarray:
        with tracing.span("image.decode", {"image.bytes": len(data)}):
            return decode_image(data, field, self.limits)

    async def load_bytes(self, pb_input, field: str) -> bytes:
        """The encoded bytes of one ImageInput, for callers that pass an image on unchanged.
        Checked for size and format (magic bytes) but not decoded."""
        data, sub = await self._raw(pb_input, field)
        if not data:
            raise InvalidArgument(sub, "image is empty (0 bytes)")
        if len(data) > self.limits.max_bytes:
            raise InvalidArgument(sub, f"image is {len(data):,} bytes, over the limit of "
                                       f"{self.limits.max_bytes:,} bytes")
        fmt = sniff_format(data)
        if fmt not in ACCEPTED_FORMATS:
            raise InvalidArgument(sub, f"unsupported image format: {fmt}; accepted: PNG, JPEG, WebP")
        return data

    async def _raw(self, pb_input, field: str) -> tuple[bytes, str]:
        which = pb_input.WhichOneof("source")
        if which == "data":
            return pb_input.data, f"{field}.data"
        if which == "uri":
            sub = f"{field}.uri"
            if not pb_input.uri:
                raise InvalidArgument(sub, "is empty; give a store URI (s3://bucket/key or file:///path)")
            if self.store is None:
                raise InvalidArgument(sub, "this service has no artifact store; send the image as data")
            return await self._run(self._read_bounded, pb_input.uri, sub), sub
        raise InvalidArgument(field, "neither data nor uri is set; set exactly one")

    def _read_bounded(self, uri: str, field: str) -> bytes:
        # Read at most one byte past the limit: an oversized object is never held whole in memory.
        with tracing.span("store.get", {"store.key": uri[:200]}), self.store.open(uri, field=field) as stream:
            data = stream.read(self.limits.max_bytes + 1)
        if len(data) > self.limits.max_bytes:
            raise InvalidArgument(field, f"image is over the limit of {self.limits.max_bytes:,} bytes")
        return data


class RequestImages:
    """The images of one request, an `ImageInput` that several items share (Composite's base and
    mask) read and decoded once. Only shared inputs are kept, and only until their last item has
    them, so the memory bound of one item at a time holds for the rest. Shared arrays are
    read-only. A failed input is reported under each item's own field: an item whose shared load
    failed loads it again for its own error."""

    def __init__(self, loader: ImageLoader, inputs):
        self._loader = loader
        self._left: dict[bytes, int] = {}  # per input: the items that have not asked for it yet
        for pb_input in inputs:
            key = pb_input.SerializeToString(deterministic=True)
            self._left[key] = self._left.get(key, 0) + 1
        self._shared = {key for key, users in self._left.items() if users > 1}
        self._loads: dict[bytes, tuple[str, asyncio.Future]] = {}

    async def _read_only(self, pb_input, field: str) -> np.ndarray:
        pixels = await self._loader.load_one(pb_input, field)
        pixels.setflags(write=False)
        return pixels

    async def load(self, pb_input, field: str) -> np.ndarray:
        key = pb_input.SerializeToString(deterministic=True)
        if key not in self._shared:
            return await self._loader.load_one(pb_input, field)
        if key not in self._loads:
            self._loads[key] = (field, asyncio.ensure_future(self._read_only(pb_input, field)))
        owner, load = self._loads[key]
        self._left[key] -= 1
        if self._left[key] == 0:  # the last item to ask: nobody needs the entry after it
            del self._loads[key]
        try:
            return await asyncio.shield(load)
        except LikenessError:
            if owner == field:
                raise
            return await self._read_only(pb_input, field)
