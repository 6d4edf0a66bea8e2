"""Validation of artifact keys and URIs, before any of them touches a disk or a bucket.

A key is a relative, `/`-separated name inside a store (`jobs/ab12/out/0.png`). A URI names an
object absolutely: `file:///abs/dir/key` or `s3://bucket/key`. Every caller-supplied name goes
through here, so path traversal (`..`), absolute escapes (`/etc/passwd`), control characters,
backslashes (Windows separators some clients send) and over-long names are refused with an
InvalidArgument that names the request field and the limit. URIs are taken literally: no
percent-decoding, so `%2e%2e` is an ordinary (odd) file name, never a parent directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from likeness.core.errors import InvalidArgument

MAX_KEY_BYTES = 1024  # the S3 limit on object names
MAX_SEGMENT_BYTES = 255  # the limit on one file name on ext4/xfs
MAX_URI_CHARS = 2048
# Keys under this first segment belong to the store itself (temp files, sha256 sidecars).
RESERVED_SEGMENT = ".likeness"

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ParsedUri:
    scheme: str  # "file" or "s3"
    bucket: str  # s3 bucket; "" for file
    path: str  # file: the absolute path; s3: the object name (no leading slash)


def _show(value: str, limit: int = 80) -> str:
    """A value fit for an error message: escaped (control chars visible) and shortened."""
    text = value.encode("unicode_escape").decode("ascii")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_text(value: str, field: str, what: str) -> None:
    if "\x00" in value:
        raise InvalidArgument(field, f"{what} {_show(value)} contains a NUL byte")
    if _CONTROL_RE.search(value):
        raise InvalidArgument(field, f"{what} {_show(value)} contains a control character")
    if "\\" in value:
        raise InvalidArgument(field, f"{what} {_show(value)} contains a backslash; use '/' as separator")


def validate_key(key: str, field: str = "key", *, prefix: bool = False) -> str:
    """Returns `key` unchanged if it is a safe relative object name, else raises InvalidArgument.

    With `prefix=True` the empty string and a trailing `/` are allowed (listing prefixes).
    """
    if not isinstance(key, str):
        raise InvalidArgument(field, f"key must be a string, got {type(key).__name__}")
    if key == "":
        if prefix:
            return key
        raise InvalidArgument(field, "key is empty")
    check_text(key, field, "key")
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(field, f"key is {size} bytes, over the limit of {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidArgument(field, f"key {_show(key)} is absolute; keys are relative to the store root")
    segments = key.split("/")
    if prefix and segments[-1] == "":
        segments = segments[:-1]
    for seg in segments:
        if seg in ("", ".", ".."):
            kind = "an empty segment" if seg == "" else f"a '{seg}' segment"
            raise InvalidArgument(field, f"key {_show(key)} has {kind}; path traversal is not allowed")
        if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidArgument(
                field, f"key {_show(key)} has a segment over the limit of {MAX_SEGMENT_BYTES} bytes"
            )
    if segments and segments[0] == RESERVED_SEGMENT:
        raise InvalidArgument(field, f"key {_show(key)} is under the reserved prefix '{RESERVED_SEGMENT}/'")
    return key


def validate_prefix(prefix: str, field: str = "output_prefix") -> str:
    """A caller's output prefix: a key prefix relative to the store (`generated/run-1/`), never a
    URI; empty is allowed (the service's default)."""
    if "://" in prefix:
        raise InvalidArgument(field, f"{_show(prefix)} is a URI; give a key prefix relative to the store, "
                                     "for example 'generated/run-1/'")
    return validate_key(prefix, field, prefix=True)


def validate_bucket(bucket: str, field: str = "uri") -> str:
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise InvalidArgument(
            field, f"bucket {_show(bucket)} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)"
        )
    return bucket


def parse_uri(uri: str, field: str = "uri") -> ParsedUri:
    """Splits `file:///abs/path` or `s3://bucket/name`; the object part is validated as a key."""
    if not isinstance(uri, str):
        raise InvalidArgument(field, f"URI must be a string, got {type(uri).__name__}")
    if len(uri) > MAX_URI_CHARS:
        raise InvalidArgument(field, f"URI is {len(uri)} characters, over the limit of {MAX_URI_CHARS}")
    check_text(uri, field, "URI")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise InvalidArgument(field, f"{_show(uri)} is not a URI (expected file:///... or s3://bucket/...)")
    scheme = scheme.lower()
    if scheme == "file":
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost") or not slash:
            raise InvalidArgument(field, f"file URI {_show(uri)} must be file:///absolute/path (no host)")
        if path:
            validate_key(path, field, prefix=True)
        return ParsedUri("file", "", "/" + path)
    if scheme == "s3":
        bucket, _, name = rest.partition("/")
        validate_bucket(bucket, field)
        if name:
            validate_key(name, field, prefix=True)
        return ParsedUri("s3", bucket, name)
    raise InvalidArgument(field, f"URI scheme '{scheme}' is not supported (file:// or s3://)")


def allowed_buckets(setting: str) -> frozenset[str]:
    """`LIKENESS_ALLOWED_BUCKETS` ("a,b, c") as a set of validated bucket names."""
    names = [b.strip() for b in setting.split(",") if b.strip()]
    return frozenset(validate_bucket(b, "LIKENESS_ALLOWED_BUCKETS") for b in names)
