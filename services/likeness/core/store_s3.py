"""S3 artifact store on the `minio` client (MinIO in a cluster, SeaweedFS in the tests).

- Objects live under `s3://<bucket>[/<prefix>]/<key>`. Reads may also name objects in the buckets
  of LIKENESS_ALLOWED_BUCKETS (inputs other systems wrote); writes and deletes stay in the root.
- The sha256 of every object written here is sent as user metadata (`x-amz-meta-sha256`), so
  `stat` answers it with one HEAD. Objects written by others have it computed on `stat`.
- A PUT (single or multipart) becomes visible only when complete, so writes are atomic.
- Transient failures (connection refused or reset, timeouts, HTTP 5xx, SlowDown) are retried
  with exponential backoff for `store_retry_seconds`, then raise UNAVAILABLE. urllib3's own
  retries are off so that this one loop bounds the total time.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from likeness.core import faults
from likeness.core.errors import InvalidArgument, LikenessError, NotFound, PermissionDenied, Unavailable
from likeness.core.settings import CommonSettings
from likeness.core.store import CHUNK, DEFAULT_MEDIA_TYPE, ArtifactStore, StoredObject, traced
from likeness.core.uris import parse_uri, validate_key

log = logging.getLogger(__name__)
T = TypeVar("T")

PART_SIZE = 16 * 1024 * 1024  # multipart above this; each part is buffered in memory once
SHA_META = "sha256"  # sent as x-amz-meta-sha256
# A call that succeeds only after this long (a frozen server answers late, without an error) is a
# stall worth reporting to the job it served, like one that needed retries.
STALL_SECONDS = 5.0
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "ServerBusy"}
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):  # a non-XML answer, e.g. a proxy's 502 page
        return getattr(exc, "_code", 0) >= 500
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_CODES or exc.response.status >= 500
    return False


class _Body(io.RawIOBase):
    """A minio response as a raw stream; closing it returns the connection to the pool."""

    def __init__(self, response, uri: str):
        self._response, self._uri = response, uri

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._response.read(len(buffer))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable("store", f"reading {self._uri} failed mid-stream: {exc}") from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


class S3Store(ArtifactStore):
    def __init__(
        self,
        client: Minio,
        bucket: str,
        prefix: str = "",
        *,
        allowed_buckets: frozenset[str] = frozenset(),
        retry_seconds: float = 30.0,
        endpoint: str = "",
    ):
        self._client = client
        self._bucket = bucket
        self._prefix = validate_key(prefix.strip("/"), "LIKENESS_STORE_URI", prefix=True) if prefix else ""
        self._readable_buckets = frozenset({bucket}) | allowed_buckets
        self._retry_seconds = retry_seconds
        self._endpoint = endpoint

    @classmethod
    def from_settings(
        cls,
        bucket: str,
        prefix: str,
        settings: CommonSettings,
        *,
        allowed_buckets: frozenset[str] = frozenset(),
    ) -> S3Store:
        # Per-request timeouts stay below the retry budget so a hung server cannot stall a caller.
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5.0, read=30.0), maxsize=16, retries=False)
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value() or None,
            secret_key=settings.s3_secret_key.get_secret_value() or None,
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http,
        )
        store = cls(
            client,
            bucket,
            prefix,
            allowed_buckets=allowed_buckets,
            retry_seconds=settings.store_retry_seconds,
            endpoint=settings.s3_endpoint,
        )
        store.ensure_bucket(settings.s3_region)
        return store

    def __repr__(self) -> str:  # never the credentials
        return f"S3Store({self.root_uri!r}, endpoint={self._endpoint!r})"

    @property
    def root_uri(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}" if self._prefix else f"s3://{self._bucket}"

    @property
    def bucket(self) -> str:
        return self._bucket

    def object_name(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    # -- retries and error mapping --------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        start = time.monotonic()
        delay = 0.1
        retries, last = 0, ""
        while True:
            try:
                result = fn()
                if retries or time.monotonic() - start >= STALL_SECONDS:
                    self._report_stall(what, retries, last, start, "then succeeded")
                return result
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                elapsed = time.monotonic() - start
                if elapsed + delay > self._retry_seconds:
                    if retries:
                        self._report_stall(what, retries, last, start, f"then gave up: {type(exc).__name__}")
                    raise Unavailable(
                        "store",
                        f"S3 at {self._endpoint} failed {what} for {elapsed:.1f}s "
                        f"(retry limit {self._retry_seconds:g}s): {type(exc).__name__}: {_short(exc)}",
                        retry_after_seconds=5.0,
                    ) from exc
                log.warning("S3 %s failed (%s), retrying in %.1fs", what, type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                retries, last = retries + 1, type(exc).__name__

    @staticmethod
    def _report_stall(what: str, retries: int, last: str, start: float, outcome: str) -> None:
        """A call that needed retries is a stall the job it served should show (core.faults)."""
        faults.report("store_stall", f"S3 {what}: stalled {time.monotonic() - start:.1f}s, {retries} "
                                     f"retr{'ies' if retries != 1 else 'y'} (last error {last or 'none'}), {outcome}")

    def _mapped(self, what: str, uri: str, field: str, fn: Callable[[], T]) -> T:
        try:
            return self._call(what, fn)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise NotFound(field, f"{uri} does not exist") from None
            if exc.code in _DENIED_CODES:
                raise PermissionDenied("store", f"S3 refused {what} {uri}: {exc.code}") from None
            raise LikenessError("store", f"S3 {what} {uri} failed: {exc.code}: {exc.message}") from exc

    def ensure_bucket(self, region: str) -> None:
        def make() -> None:
            if self._client.bucket_exists(self._bucket):
                return
            try:
                self._client.make_bucket(self._bucket, location=region)
            except S3Error as exc:  # another pod created it meanwhile
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        self._mapped("creating bucket", f"s3://{self._bucket}", "LIKENESS_STORE_URI", make)

    # -- naming ---------------------------------------------------------------------------------

    def key_of(self, uri_or_key: str, *, field: str = "uri") -> str:
        if isinstance(uri_or_key, str) and "://" in uri_or_key:
            parsed = parse_uri(uri_or_key, field)
            root = self._prefix + "/" if self._prefix else ""
            if (
                parsed.scheme == "s3"
                and parsed.bucket == self._bucket
                and (parsed.path + "/").startswith(root)
            ):
                return validate_key(parsed.path[len(root) :], field, prefix=True)
            self._locate(uri_or_key, field)  # names the rule broken (scheme, bucket), if any
            raise InvalidArgument(field, f"{uri_or_key!r} is outside the store root {self.root_uri}")
        return validate_key(uri_or_key, field, prefix=True)

    def _locate(self, uri_or_key: str, field: str) -> tuple[str, str]:
        """(bucket, object name) of a readable object: a key in the root or an allowed bucket's URI."""
        if not (isinstance(uri_or_key, str) and "://" in uri_or_key):
            return self._bucket, self.object_name(validate_key(uri_or_key, field))
        parsed = parse_uri(uri_or_key, field)
        if parsed.scheme != "s3":
            raise InvalidArgument(
                field, f"{uri_or_key!r} is not in this store ({self.root_uri}); use s3:// URIs"
            )
        if parsed.bucket not in self._readable_buckets:
            allowed = ", ".join(sorted(self._readable_buckets))
            raise InvalidArgument(
                field,
                f"bucket '{parsed.bucket}' is not allowed (allowed: {allowed}; see LIKENESS_ALLOWED_BUCKETS)",
            )
        return parsed.bucket, validate_key(parsed.path, field)

    # -- writes ---------------------------------------------------------------------------------

    @traced("put")
    def put(self, key: str, data: bytes, media_type: str = DEFAULT_MEDIA_TYPE) -> StoredObject:
        key = self.object_key(key, field="key")
        digest = hashlib.sha256(data).hexdigest()
        self._upload(key, lambda: io.BytesIO(data), len(data), digest, media_type)
        return StoredObject(self.uri(key), digest, len(data), media_type)

    @traced("put")
    def put_file(self, key: str, path: str | Path, media_type: str = DEFAULT_MEDIA_TYPE) -> StoredObject:
        from likeness.core.store import sha256_file

        key = self.object_key(key, field="key")
        # The hash must go in the request headers, so it is computed in a first pass.
        digest, size = sha256_file(path)
        with open(path, "rb") as f:

            def rewound() -> BinaryIO:
                f.seek(0)
                return f

            self._upload(key, rewound, size, digest, media_type)
        return StoredObject(self.uri(key), digest, size, media_type)

    def _upload(
        self, key: str, stream: Callable[[], BinaryIO], size: int, digest: str, media_type: str
    ) -> None:
        name = self.object_name(key)
        self._mapped(
            "writing",
            self.uri(key),
            "key",
            lambda: self._client.put_object(
                self._bucket,
                name,
                stream(),
                size,
                content_type=media_type,
                metadata={SHA_META: digest},
                part_size=PART_SIZE,
            ),
        )

    def delete(self, uri_or_key: str, *, field: str = "uri") -> bool:
        key = self.object_key(uri_or_key, field=field)
        existed = self.exists(key, field=field)
        uri = self.uri(key)
        self._mapped(
            "deleting", uri, field, lambda: self._client.remove_object(self._bucket, self.object_name(key))
        )
        return existed

    # -- reads ----------------------------------------------------------------------------------

    def _uri_of(self, bucket: str, name: str) -> str:
        return f"s3://{bucket}/{name}"

    def open(self, uri_or_key: str, *, field: str = "uri") -> BinaryIO:
        bucket, name = self._locate(uri_or_key, field)
        uri = self._uri_of(bucket, name)
        response = self._mapped("reading", uri, field, lambda: self._client.get_object(bucket, name))
        return io.BufferedReader(_Body(response, uri), CHUNK)

    @traced("get")
    def get(self, uri_or_key: str, *, field: str = "uri") -> bytes:
        bucket, name = self._locate(uri_or_key, field)
        uri = self._uri_of(bucket, name)

        def fetch() -> bytes:
            response = self._client.get_object(bucket, name)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._mapped("reading", uri, field, fetch)

    @traced("get")
    def get_to_file(self, uri_or_key: str, path: str | Path, *, field: str = "uri") -> StoredObject:
        """Like the base class, but a connection lost mid-download restarts the download (within
        the retry budget), so large model files survive a brief outage."""
        bucket, name = self._locate(uri_or_key, field)
        uri = self._uri_of(bucket, name)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}-{id(dest):x}")

        def download() -> tuple[str, int, str]:
            response = self._client.get_object(bucket, name)
            h, size = hashlib.sha256(), 0
            try:
                with open(tmp, "wb") as out:
                    for chunk in response.stream(CHUNK):
                        h.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            finally:
                response.close()
                response.release_conn()
            return h.hexdigest(), size, response.headers.get("content-type") or DEFAULT_MEDIA_TYPE

        try:
            digest, size, media_type = self._mapped("reading", uri, field, download)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredObject(uri, digest, size, media_type)

    def stat(self, uri_or_key: str, *, field: str = "uri") -> StoredObject:
        bucket, name = self._locate(uri_or_key, field)
        uri = self._uri_of(bucket, name)
        info = self._mapped("reading", uri, field, lambda: self._client.stat_object(bucket, name))
        digest = (info.metadata or {}).get(f"x-amz-meta-{SHA_META}")
        if not digest:  # written by someone else: hash the bytes once
            h = hashlib.sha256()
            with self.open(uri, field=field) as stream:
                while chunk := stream.read(CHUNK):
                    h.update(chunk)
            digest = h.hexdigest()
        return StoredObject(uri, digest, info.size, info.content_type or DEFAULT_MEDIA_TYPE)

    def exists(self, uri_or_key: str, *, field: str = "uri") -> bool:
        bucket, name = self._locate(uri_or_key, field)
        try:
            self._mapped(
                "reading", self._uri_of(bucket, name), field, lambda: self._client.stat_object(bucket, name)
            )
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        prefix = self.key_of(prefix, field="prefix")
        root = self._prefix + "/" if self._prefix else ""

        def collect() -> list[str]:
            objects = self._client.list_objects(self._bucket, prefix=root + prefix, recursive=True)
            return [o.object_name[len(root) :] for o in objects if not o.is_dir]

        keys = self._mapped("listing", self.root_uri + "/" + prefix, "prefix", collect)
        return sorted(k for k in keys if _valid_key(k))


def _valid_key(key: str) -> bool:
    """Objects others wrote with names our keys cannot express are left out of listings."""
    try:
        validate_key(key)
    except InvalidArgument:
        return False
    return True


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."
