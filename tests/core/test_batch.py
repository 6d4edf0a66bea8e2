"""core.batch: the per-item rules shared by the event-loop and the model-worker entry points."""

from __future__ import annotations

import asyncio

import pytest

from likeness.core.batch import each_item, run_each
from likeness.core.errors import InvalidArgument


def _half(x: int) -> int:
    if x % 2:
        raise InvalidArgument("x", f"{x} is odd")
    return x // 2


def test_run_each_keeps_order_and_gives_a_failed_item_its_error():
    told: list[str] = []
    outcomes = run_each(_half, [4, 3, 8], count=told.append)
    assert [(o.index, o.value) for o in outcomes] == [(0, 2), (1, None), (2, 4)]
    assert isinstance(outcomes[1].error, InvalidArgument) and outcomes[0].error is None
    assert told == ["ok", "failed", "ok"]


def test_run_each_lets_a_bug_fail_the_whole_unit():
    with pytest.raises(ZeroDivisionError):
        run_each(lambda x: 1 // x, [1, 0, 2])


def test_each_item_applies_the_batch_of_one_rule():
    async def half(i: int, x: int) -> int:
        return _half(x)

    outcomes = asyncio.run(each_item([2, 5], half))
    assert [o.value for o in outcomes] == [1, None] and isinstance(outcomes[1].error, InvalidArgument)
    with pytest.raises(InvalidArgument, match="5 is odd"):
        asyncio.run(each_item([5], half))
