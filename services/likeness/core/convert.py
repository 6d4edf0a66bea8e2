"""Protobuf helpers shared by every servicer (the only core module besides image_loader that
imports generated stubs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def item_results_pb(outcomes: Sequence, result_type: type, ok: Callable | str | None = None) -> list:
    """One `result_type` message per `core.batch.Outcome`: for a good item `ok(index, value)`, or
    `result_type(index=index, <ok>=value)` when `ok` names a field, or the value itself (already the
    message) when `ok` is None; `result_type(index, error=ItemError)` for a failed one."""
    if isinstance(ok, str):
        field = ok
        ok = lambda i, value: result_type(index=i, **{field: value})  # noqa: E731
    return [result_type(index=o.index, error=item_error_pb(o.index, o.error)) if o.error is not None
            else (ok(o.index, o.value) if ok else o.value) for o in outcomes]
