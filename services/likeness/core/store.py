"""The artifact store: one synchronous interface over a local folder and S3 (MinIO, SeaweedFS).

Services pass artifacts between each other by URI (`file:///...`, `s3://bucket/key`); this module
turns those URIs back into bytes. The interface is blocking on purpose: it is called from
`asyncio.to_thread`, and both backends are blocking libraries underneath.

Guarantees on both backends:
- every caller-supplied key or URI is validated (core/uris.py) before it is used;
- a write is atomic: readers see the old object or the new one, never half of one, even when
  the writing process is killed mid-way;
- the sha256 of every object written through the store is recorded at write time, so `stat`
  answers it without reading the data (objects written by others get it computed on `stat`).
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from likeness.core import tracing
from likeness.core.errors import InvalidArgument
from likeness.core.settings import CommonSettings
from likeness.core.uris import allowed_buckets, parse_uri, validate_key

DEFAULT_MEDIA_TYPE = "application/octet-stream"
CHUNK = 1024 * 1024


def traced(operation: str):
    """A span `store.<operation>` (get or put) around a store method whose first argument names the
    object, so a slow read or write shows in the trace of the call that made it."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, target, *args, **kwargs):
            with tracing.span(f"store.{operation}", {"store.key": str(target)[:200]}):
                return method(self, target, *args, **kwargs)
        return run
    return wrap


@dataclass(frozen=True)
class StoredObject:
    uri: str
    sha256: str  # hex
    size: int  # bytes
    media_type: str


class ArtifactStore(ABC):
    """Objects addressed by a relative key or by a URI inside this store's root."""

    @property
    @abstractmethod
    def root_uri(self) -> str:
        """`file:///abs/dir` or `s3://bucket[/prefix]`, without a trailing slash."""

    def uri(self, key: str) -> str:
        """The URI of `key` (or of a prefix ending in `/`; "" is the root) in this store; the key
        is validated, not required to exist."""
        key = validate_key(key, "key", prefix=True)
        return f"{self.root_uri}/{key}" if key else self.root_uri

    @abstractmethod
    def key_of(self, uri_or_key: str, *, field: str = "uri") -> str:
        """The validated key of a URI inside this store, or of a bare key; InvalidArgument if not.

        Prefixes are accepted too (a trailing `/` is kept; the root URI gives ""), so a caller can
        turn a dataset URI into a `list` prefix; object operations reject those themselves."""

    def object_key(self, uri_or_key: str, *, field: str = "uri") -> str:
        """Like `key_of`, but only a key that can name an object (not "", no trailing `/`)."""
        return validate_key(self.key_of(uri_or_key, field=field), field)

    @abstractmethod
    def put(self, key: str, data: bytes, media_type: str = DEFAULT_MEDIA_TYPE) -> StoredObject: ...

    @abstractmethod
    def put_file(self, key: str, path: str | Path, media_type: str = DEFAULT_MEDIA_TYPE) -> StoredObject:
        """Streams a local file into the store (never whole in memory; multipart on S3)."""

    @abstractmethod
    def open(self, uri_or_key: str, *, field: str = "uri") -> BinaryIO:
        """A readable binary stream; close it (use `with`). NotFound naming the URI if absent."""

    @abstractmethod
    def stat(self, uri_or_key: str, *, field: str = "uri") -> StoredObject: ...

    @abstractmethod
    def exists(self, uri_or_key: str, *, field: str = "uri") -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys (relative to the root) starting with `prefix` (a string prefix, as in S3; a key or
        a URI inside the store), sorted."""

    @abstractmethod
    def delete(self, uri_or_key: str, *, field: str = "uri") -> bool:
        """Removes the object; True if it existed. Deleting an absent key is not an error."""

    @traced("get")
    def get(self, uri_or_key: str, *, field: str = "uri") -> bytes:
        with self.open(uri_or_key, field=field) as stream:
            return stream.read()

    @traced("get")
    def get_to_file(self, uri_or_key: str, path: str | Path, *, field: str = "uri") -> StoredObject:
        """Streams an object to `path` atomically (temp file + rename); returns what was written,
        with the sha256 computed from the bytes received."""
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{_token()}")
        h, size = hashlib.sha256(), 0
        try:
            with self.open(uri_or_key, field=field) as src, open(tmp, "wb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        info = self.stat(uri_or_key, field=field)
        return StoredObject(info.uri, h.hexdigest(), size, info.media_type)


def _token() -> str:
    return uuid.uuid4().hex[:12]


def sha256_file(path: str | Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def open_store(settings: CommonSettings, uri: str | None = None) -> ArtifactStore:
    """The store named by `settings.store_uri` (or `uri`): `file:///abs/dir` -> LocalStore,
    `s3://bucket[/prefix]` -> S3Store (bucket created if missing)."""
    root = (uri or settings.store_uri).rstrip("/")
    parsed = parse_uri(root, "LIKENESS_STORE_URI")
    extra = allowed_buckets(settings.allowed_buckets)
    if parsed.scheme == "file":
        from likeness.core.store_local import LocalStore

        return LocalStore(parsed.path)
    if parsed.scheme == "s3":
        from likeness.core.store_s3 import S3Store

        return S3Store.from_settings(parsed.bucket, parsed.path, settings, allowed_buckets=extra)
    raise InvalidArgument("LIKENESS_STORE_URI", f"unsupported store URI {root!r}")
