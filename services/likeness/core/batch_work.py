"""A request's items as one unit of model work.

A servicer that handed its model worker one item at a time interleaved concurrent requests on the
worker (request A's first image, B's first, C's first, ...): every request then finished at about
the same moment, at the end of the whole window, and the worker stood idle while the client
answered and sent the next requests and their images were read and decoded. Run as one unit, a
request's items leave the worker in arrival order, the first request is answered after its own
items, and the next one is decoded while the worker still has queued requests to run. It is also
one thread hop per request instead of one per item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from likeness.core.errors import LikenessError

T = TypeVar("T")
R = TypeVar("R")


def run_each(fn: Callable[[T], R], items: Sequence[T]) -> list[R | LikenessError]:
    """`fn(item)` for every item, in order, on the calling thread (the model worker). An item whose
    work raises a LikenessError gets the error in its place and its batch-mates still run; any
    other exception fails the whole unit (a bug, not bad input)."""
    out: list[R | LikenessError] = []
    for item in items:
        try:
            out.append(fn(item))
        except LikenessError as exc:
            out.append(exc)
    return out
