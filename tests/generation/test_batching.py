"""The dynamic batcher, with a stand-in model call (fast, exact): merging, bounds, cancellation,
isolation of a failing item."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from likeness.core.errors import InvalidArgument, ResourceExhausted
from likeness.generation.batching import DynamicBatcher


class Recorder:
    """Records each model call; sleeps `seconds` per call; items equal to "poison" break a batch."""

    def __init__(self, seconds: float = 0.0):
        self.calls: list[tuple] = []
        self.seconds = seconds
        self.release = threading.Event()
        self.release.set()

    def __call__(self, key, payloads):
        self.release.wait(10)
        self.calls.append((key, list(payloads)))
        time.sleep(self.seconds)
        if "poison" in payloads and len(payloads) > 1:
            raise RuntimeError("a batch with a poisoned item")
        if payloads == ["poison"]:
            raise InvalidArgument("prompt", "poisoned")
        return [f"{key}:{p}" for p in payloads]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_compatible_requests_merge_up_to_max_batch():
    rec = Recorder()
    sizes = []

    async def main():
        b = DynamicBatcher(rec, max_batch=4, max_wait=0.2, capacity=32, on_batch=lambda k, n: sizes.append(n))
        results = await asyncio.gather(b.submit("A", [1, 2]), b.submit("A", [3]), b.submit("B", [9]),
                                       b.submit("A", [4, 5]))
        await b.close()
        return results

    results = run(main())
    assert results == [["A:1", "A:2"], ["A:3"], ["B:9"], ["A:4", "A:5"]]
    batches = {(k, tuple(p)) for k, p in rec.calls}
    assert ("A", (1, 2, 3, 4)) in batches and ("A", (5,)) in batches and ("B", (9,)) in batches
    assert sorted(sizes) == [1, 1, 4]


def test_full_queue_is_resource_exhausted_with_retry_hint():
    rec = Recorder()
    rec.release.clear()  # the worker is busy: nothing leaves the queue

    async def main():
        b = DynamicBatcher(rec, max_batch=2, max_wait=0.0, capacity=3)
        first = asyncio.ensure_future(b.submit("A", [1, 2]))  # taken by the worker, which blocks
        await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(b.submit("A", [3, 4, 5]))  # fills the queue
        await asyncio.sleep(0.05)
        with pytest.raises(ResourceExhausted) as err:
            await b.submit("A", [6])
        rec.release.set()
        await asyncio.gather(first, waiting)
        await b.close()
        return err.value

    err = run(main())
    assert err.retry_after_seconds and err.retry_after_seconds > 0
    assert "3 of 3" in err.message


def test_cancelled_request_leaves_the_queue():
    rec = Recorder()
    rec.release.clear()

    async def main():
        b = DynamicBatcher(rec, max_batch=1, max_wait=0.0, capacity=8)
        running = asyncio.ensure_future(b.submit("A", [1]))
        await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(b.submit("A", [2, 3]))
        await asyncio.sleep(0.05)
        assert b.depth == 2
        waiting.cancel()
        await asyncio.sleep(0.05)
        depth_after_cancel = b.depth
        rec.release.set()
        await running
        await asyncio.sleep(0.1)
        await b.close()
        return depth_after_cancel

    assert run(main()) == 0
    assert [p for _, p in rec.calls] == [[1]]  # the cancelled images never ran


def test_a_bad_item_fails_alone():
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec, max_batch=4, max_wait=0.1, capacity=8)
        good = asyncio.ensure_future(b.submit("A", [1]))
        bad = asyncio.ensure_future(b.submit("A", ["poison"]))
        other = asyncio.ensure_future(b.submit("A", [2]))
        done = await asyncio.gather(good, bad, other, return_exceptions=True)
        await b.close()
        return done

    good, bad, other = run(main())
    assert good == ["A:1"] and other == ["A:2"]
    assert isinstance(bad, InvalidArgument)
    assert len(rec.calls[0][1]) == 3  # they were batched, then retried one by one


def test_time_held_for_batch_mates_is_reported():
    """A partial batch waits up to max_wait with the worker free; that hold is told to `on_hold`
    (exported as likeness_batch_hold_seconds_total), and a full batch is never held."""
    rec = Recorder()
    holds: list[float] = []

    async def main():
        b = DynamicBatcher(rec, max_batch=2, max_wait=0.2, capacity=8, on_hold=holds.append)
        await b.submit("A", [1])  # alone: waits out the window
        held_alone = sum(holds)
        holds.clear()
        await b.submit("A", [2, 3])  # full at once: runs without waiting
        await b.close()
        return held_alone

    held_alone = run(main())
    assert 0.15 <= held_alone <= 1.0, held_alone
    assert sum(holds) < 0.05, holds
