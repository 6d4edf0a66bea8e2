"""Local-folder artifact store (the embedded default): objects are files under one root folder.

Layout under the root:
    <key>                               the object's bytes
    .likeness/meta/<key>.json           {"sha256", "size", "media_type", "mtime_ns"} of the object
    .likeness/tmp/                      writes in progress (same file system, so rename is atomic)

A write goes to a temp file, is fsynced and renamed over the key, then the sidecar is renamed into
place. A process killed between the two renames leaves a sidecar that no longer matches the
object's size and mtime; `stat` notices and recomputes the sha256, so a stale hash is never served.
Unlike S3, a key cannot be both an object and a "folder" (`a` and `a/b`): that write fails with
FAILED_PRECONDITION.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mimetypes
import os
import time
from pathlib import Path
from typing import BinaryIO

from likeness.core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from likeness.core.store import (
    CHUNK,
    DEFAULT_MEDIA_TYPE,
    ArtifactStore,
    StoredObject,
    _token,
    sha256_file,
    traced,
)
from likeness.core.uris import RESERVED_SEGMENT, parse_uri, validate_key

STALE_TMP_SECONDS = 24 * 3600  # temp files older than this are leftovers of killed writers


def _replace_into(src: Path, dest: Path) -> None:
    """os.replace, creating parent folders; retried because a concurrent delete may prune them."""
    for attempt in range(3):
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dest)
            return
        except FileNotFoundError:
            if attempt == 2 or not src.exists():
                raise


class LocalStore(ArtifactStore):
    def __init__(self, root: str | Path):
        root = Path(root)
        if not root.is_absolute():
            raise InvalidArgument("LIKENESS_STORE_URI", f"store folder {str(root)!r} must be absolute")
        self._root = root
        self._internal = root / RESERVED_SEGMENT
        self._tmp = self._internal / "tmp"
        self._meta = self._internal / "meta"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._meta.mkdir(parents=True, exist_ok=True)
        self._real_root = root.resolve()
        self._sweep_stale_tmp()

    def __repr__(self) -> str:
        return f"LocalStore({str(self._root)!r})"

    @property
    def root(self) -> Path:
        return self._root

    @property
    def root_uri(self) -> str:
        return "file://" + str(self._root).rstrip("/")

    # -- naming -------------------------------------------------------------------------------

    def key_of(self, uri_or_key: str, *, field: str = "uri") -> str:
        if isinstance(uri_or_key, str) and "://" in uri_or_key:
            parsed = parse_uri(uri_or_key, field)
            if parsed.scheme != "file":
                raise InvalidArgument(
                    field,
                    f"{uri_or_key!r} is not in this store ({self.root_uri}); only file:// URIs are served",
                )
            root = str(self._root).rstrip("/") + "/"
            if parsed.path + "/" == root:
                return ""
            if not parsed.path.startswith(root):
                raise InvalidArgument(field, f"{uri_or_key!r} is outside the store root {self.root_uri}")
            return validate_key(parsed.path[len(root) :], field, prefix=True)
        return validate_key(uri_or_key, field, prefix=True)

    def _path(self, key: str) -> Path:
        return self._root / key

    def _meta_path(self, key: str) -> Path:
        return self._meta / (key + ".json")

    def _readable(self, uri_or_key: str, field: str) -> tuple[str, Path]:
        key = self.object_key(uri_or_key, field=field)
        path = self._path(key)
        # A symlink inside the root must not lead reads outside it.
        try:
            real = path.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(field, f"{self.uri(key)} does not exist") from None
        if not real.is_relative_to(self._real_root) or not real.is_file():
            raise NotFound(field, f"{self.uri(key)} does not exist")
        return key, path

    # -- writes -------------------------------------------------------------------------------

    @traced("put")
    def put(self, key: str, data: bytes, media_type: str = DEFAULT_MEDIA_TYPE) -> StoredObject:
        key = self.object_key(key, field="key")
        tmp = self._tmp / _token()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            digest = hashlib.sha256(data).hexdigest()
            return self._commit(key, tmp, digest, len(data), media_type)
        finally:
            tmp.unlink(missing_ok=True)

    @traced("put")
    def put_file(self, key: str, path: str | Path, media_type: str = DEFAULT_MEDIA_TYPE) -> StoredObject:
        key = self.object_key(key, field="key")
        tmp = self._tmp / _token()
        h, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._commit(key, tmp, h.hexdigest(), size, media_type)
        finally:
            tmp.unlink(missing_ok=True)

    def _commit(self, key: str, tmp: Path, digest: str, size: int, media_type: str) -> StoredObject:
        dest = self._path(key)
        meta = {"sha256": digest, "size": size, "media_type": media_type, "mtime_ns": tmp.stat().st_mtime_ns}
        meta_tmp = self._tmp / (_token() + ".json")
        try:
            meta_tmp.write_text(json.dumps(meta))
            try:
                _replace_into(tmp, dest)
                _replace_into(meta_tmp, self._meta_path(key))
            except (NotADirectoryError, IsADirectoryError, FileExistsError):
                raise FailedPrecondition(
                    "key", f"{key!r} conflicts with an existing object or folder of the same name"
                ) from None
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise ResourceExhausted("store", f"no space left in {self._root}") from exc
                raise
        finally:
            meta_tmp.unlink(missing_ok=True)
        return StoredObject(self.uri(key), digest, size, media_type)

    def delete(self, uri_or_key: str, *, field: str = "uri") -> bool:
        key = self.object_key(uri_or_key, field=field)
        path = self._path(key)
        existed = path.is_file()
        if existed:
            path.unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)
        self._prune_empty_dirs(path.parent, self._root)
        self._prune_empty_dirs(self._meta_path(key).parent, self._meta)
        return existed

    # -- reads --------------------------------------------------------------------------------

    def open(self, uri_or_key: str, *, field: str = "uri") -> BinaryIO:
        key, path = self._readable(uri_or_key, field)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise NotFound(field, f"{self.uri(key)} does not exist") from None

    def exists(self, uri_or_key: str, *, field: str = "uri") -> bool:
        try:
            self._readable(uri_or_key, field)
        except NotFound:
            return False
        return True

    def stat(self, uri_or_key: str, *, field: str = "uri") -> StoredObject:
        key, path = self._readable(uri_or_key, field)
        st = path.stat()
        try:
            meta = json.loads(self._meta_path(key).read_text())
            if meta["size"] == st.st_size and meta["mtime_ns"] == st.st_mtime_ns:
                return StoredObject(self.uri(key), meta["sha256"], st.st_size, meta["media_type"])
        except (OSError, ValueError, KeyError):
            pass  # no sidecar (object placed by hand) or a stale one: recompute below
        digest, size = sha256_file(path)
        media_type = mimetypes.guess_type(key)[0] or DEFAULT_MEDIA_TYPE
        return StoredObject(self.uri(key), digest, size, media_type)

    def list(self, prefix: str = "") -> list[str]:
        prefix = self.key_of(prefix, field="prefix")
        # Walk only the deepest folder the prefix names, then filter by string prefix (S3 semantics).
        base = self._root / prefix.rpartition("/")[0] if "/" in prefix else self._root
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            if Path(dirpath) == self._root and RESERVED_SEGMENT in dirnames:
                dirnames.remove(RESERVED_SEGMENT)
            rel = os.path.relpath(dirpath, self._root)
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    # -- housekeeping -------------------------------------------------------------------------

    def _sweep_stale_tmp(self) -> None:
        cutoff = time.time() - STALE_TMP_SECONDS
        for entry in self._tmp.iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
            except OSError:
                pass  # another process may be removing it too

    @staticmethod
    def _prune_empty_dirs(start: Path, stop: Path) -> None:
        """Removes now-empty parent folders up to (not including) `stop`, so lists stay clean."""
        current = start
        while current != stop and stop in current.parents:
            try:
                current.rmdir()
            except OSError:
                return  # not empty, or removed concurrently
            current = current.parent
