"""Keyset pagination of newest-first listings (orchestrator List, training ListRuns).

A page token names the last row of the previous page, `(created_at, id)`: the next page starts
strictly after it in the order `created_at DESC, id DESC`, so rows added meanwhile never shift a
page. A page stops at `page_size` rows or before its response passes `MAX_PAGE_BYTES`, whichever
comes first, so no set of stored rows can make a listing fail for its size.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import and_, or_, true

from likeness.core.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_PAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: str


def page_size(value: int, field: str = "page_size") -> int:
    size = value or DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidArgument(field, f"{value} is outside [1, {MAX_PAGE_SIZE:,}]")
    return size


def encode(cursor: Cursor) -> str:
    raw = json.dumps([cursor.created_at.isoformat(), cursor.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, field: str = "page_token") -> Cursor | None:
    if not token:
        return None
    try:
        created, id_ = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return Cursor(datetime.fromisoformat(created), str(id_))
    except (ValueError, TypeError, binascii.Error):
        raise InvalidArgument(field, "is not a token returned as next_page_token by this listing") from None


def after(columns: tuple, cursor: Cursor | None):
    """The WHERE clause of the rows after `cursor` in `created_at DESC, id DESC` order."""
    created, id_ = columns
    if cursor is None:
        return true()
    return or_(created < cursor.created_at, and_(created == cursor.created_at, id_ < cursor.id))


def fill(rows: Sequence[T], size: int, to_pb: Callable[[T], Message], cursor_of: Callable[[T], Cursor],
            max_bytes: int = MAX_PAGE_BYTES) -> tuple[list[Message], str]:
    """Up to `size` messages from `rows` (fetched with one extra row to see whether more follow)
    within `max_bytes`; returns them and the next page token ('' on the last page). A page holds at
    least one row, so a listing always advances."""
    out: list[Message] = []
    total = 0
    for row in rows[:size]:
        pb = to_pb(row)
        total += pb.ByteSize() + 8  # field tag and length prefix of the repeated element
        if out and total > max_bytes:
            return out, encode(cursor_of(rows[len(out) - 1]))
        out.append(pb)
    more = len(rows) > size
    return out, encode(cursor_of(rows[len(out) - 1])) if more and out else ""
