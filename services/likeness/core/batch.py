"""Per-item work of a batch call, shared by every servicer that takes a list of items.

The rules: the batch size is checked first (INVALID_ARGUMENT naming the field and the limit); each
item then succeeds or fails on its own and a failed item becomes an `ItemError` in its result; but
a batch of one whose item fails gets that error as the call's status (the caller sent one thing,
so the call failed). `tests/core/test_bad_images_service.py` holds every service to this.

Two entry points share these rules: `each_item` awaits every item on the event loop (concurrently
or in order); `run_each` runs a request's items in order on the calling thread, the model worker.
A servicer that handed its model worker one item at a time interleaved concurrent requests on the
worker (request A's first image, B's first, C's first, ...): every request then finished at about
the same moment, at the end of the whole window, and the worker stood idle while the client
answered and sent the next requests and their images were read and decoded. Run as one unit, a
request's items leave the worker in arrival order, the first request is answered after its own
items, and the next one is decoded while the worker still has queued requests to run. It is also
one thread hop per request instead of one per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from likeness.core.errors import InvalidArgument, LikenessError

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    """One item's result, or the error it failed with."""

    index: int
    value: T | None = None
    error: LikenessError | None = None


def check_batch(n: int, limit: int, field: str, unit: str = "items", setting: str = "") -> None:
    """INVALID_ARGUMENT unless 1 <= n <= limit; `setting` names the variable that sets the limit."""
    if not 1 <= n <= limit:
        hint = f" ({setting})" if setting else ""
        raise InvalidArgument(field, f"batch of {n} {unit}; send 1 to {limit}{hint}")


def raise_single(errors: Sequence[LikenessError | None]) -> None:
    """The batch-of-one rule: a single failed item fails the whole call with its own status."""
    if len(errors) == 1 and errors[0] is not None:
        raise errors[0]


def _settled(index: int, value, error: LikenessError | None, count: Callable[[str], None] | None) -> Outcome:
    """One item's outcome, told to `count` as "ok" or "failed"."""
    if count:
        count("ok" if error is None else "failed")
    return Outcome(index, value, error)


def run_each(fn: Callable[[Any], T], items: Sequence, *,
             count: Callable[[str], None] | None = None) -> list[Outcome[T]]:
    """`fn(item)` for every item, in order, on the calling thread (the model worker). An item whose
    work raises a LikenessError gets the error as its `Outcome.error` and its batch-mates still
    run; any other exception fails the whole unit (a bug, not bad input). The batch-of-one rule is
    left to the caller, which may hold items that failed before this unit (undecodable images)."""
    out: list[Outcome[T]] = []
    for i, item in enumerate(items):
        try:
            value = fn(item)
        except LikenessError as exc:
            out.append(_settled(i, None, exc, count))
            continue
        out.append(_settled(i, value, None, count))
    return out


async def each_item(items: Sequence, fn: Callable[[int, Any], Awaitable[T]], *,
                    count: Callable[[str], None] | None = None, sequential: bool = False) -> list[Outcome[T]]:
    """Runs `await fn(index, item)` for every item (concurrently, or one after another when
    `sequential`); a `LikenessError` becomes that item's `Outcome.error`. `count(outcome)` is told
    "ok" or "failed" per item. Applies the batch-of-one rule before returning."""

    async def one(i: int, item) -> Outcome[T]:
        try:
            value = await fn(i, item)
        except LikenessError as exc:
            return _settled(i, None, exc, count)
        return _settled(i, value, None, count)

    if sequential:
        outcomes = [await one(i, item) for i, item in enumerate(items)]
    else:
        outcomes = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
    raise_single([o.error for o in outcomes])
    return list(outcomes)
