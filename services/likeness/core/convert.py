"""Protobuf helpers shared by every servicer (the only core module besides image_loader that
imports generated stubs)."""

from __future__ import annotations

from likeness.api.v1 import common_pb2
from likeness.core.errors import LikenessError
from likeness.core.store import StoredObject


def artifact_pb(obj: StoredObject, data: bytes | None = None) -> common_pb2.Artifact:
    """A stored object as an `Artifact`; `data` inlines its bytes when the caller asked for them."""
    return common_pb2.Artifact(uri=obj.uri, sha256=obj.sha256, media_type=obj.media_type,
                               size_bytes=obj.size, data=data or b"")


def item_error_pb(index: int, error: LikenessError) -> common_pb2.ItemError:
    """The per-item error of a batch: the status the item would have got alone, and why."""
    return common_pb2.ItemError(index=index, code=error.code, message=error.message, field=error.field)
