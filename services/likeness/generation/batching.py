"""Dynamic batching: concurrent compatible work items merge into one model call.

Items with the same key (model, size, steps, sampler, adapters, ...) wait up to `max_wait`
seconds for batch-mates and are run together, at most `max_batch` at a time, by one worker (one
accelerator runs one pipeline call at a time). The queue is bounded: a request that does not fit
gets RESOURCE_EXHAUSTED with a retry hint estimated from recent batch durations. A request
cancelled while waiting leaves the queue. When a batch fails, its items are retried one by one,
so a bad item fails alone and never takes its batch-mates down with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from likeness.core import tracing
from likeness.core.errors import LikenessError, ResourceExhausted, Unavailable
from likeness.core.worker import ModelWorker

log = logging.getLogger("likeness.generation.batching")


@dataclass
class Entry:
    key: Hashable
    payload: object
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    started: float = 0.0


# run_batch(key, payloads) -> one result (or an Exception instance) per payload, in order
RunBatch = Callable[[Hashable, list], Sequence]


class DynamicBatcher:
    def __init__(self, run_batch: RunBatch, *, max_batch: int, max_wait: float, capacity: int,
                 on_depth: Callable[[int], None] | None = None,
                 on_batch: Callable[[Hashable, int], None] | None = None,
                 on_hold: Callable[[float], None] | None = None):
        self._run_batch = run_batch
        self.max_batch, self.max_wait, self.capacity = max_batch, max_wait, capacity
        self._queues: OrderedDict[Hashable, list[Entry]] = OrderedDict()
        self._depth = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        # the one thread that runs batches; model loads and unloads run on it too (`worker.run`)
        self.worker = ModelWorker("generation", name="worker")
        self._on_depth = on_depth or (lambda depth: None)
        self._on_batch = on_batch or (lambda key, size: None)
        self._on_hold = on_hold or (lambda seconds: None)  # the worker free while requests wait
        self._recent_seconds_per_item = 1.0
        self._closed = False

    @property
    def depth(self) -> int:
        """Items waiting (not yet running)."""
        return self._depth

    def start(self) -> None:
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="batcher")

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for entries in self._queues.values():
            for e in entries:
                if not e.future.done():
                    e.future.set_exception(Unavailable("", "the generation service is shutting down"))
        self._queues.clear()
        self.worker.close(wait=True)

    async def submit(self, key: Hashable, payloads: list) -> list:
        """Queues `payloads` (all with compatible `key`) and returns their results in order.

        Raises ResourceExhausted (with a retry hint) when the queue cannot take them all; a
        per-item failure raises that item's exception."""
        if self._closed:
            raise Unavailable("", "the generation service is shutting down")
        self.start()
        if self._depth + len(payloads) > self.capacity:
            wait = self.retry_after()
            raise ResourceExhausted("", f"generation queue is full ({self._depth} of {self.capacity} images "
                                        f"waiting; this request adds {len(payloads)}); retry in ~{wait:.1f} s",
                                    retry_after_seconds=wait)
        loop = asyncio.get_running_loop()
        entries = [Entry(key, p, loop.create_future()) for p in payloads]
        self._queues.setdefault(key, []).extend(entries)
        self._set_depth(self._depth + len(entries))
        self._wakeup.set()
        try:
            results = list(await asyncio.gather(*(e.future for e in entries)))
        except asyncio.CancelledError:
            self._withdraw(entries)
            raise
        except BaseException:
            self._withdraw(entries)
            raise
        started = min(e.started for e in entries)
        tracing.record_interval("model.batch_wait", entries[0].enqueued, started, {"batch.items": len(entries)})
        tracing.record_interval("model.batch_run", started, time.monotonic())
        return results

    def retry_after(self) -> float:
        """Seconds until the queue has likely drained by one batch: a hint, not a promise."""
        batches_ahead = max(1, self._depth // self.max_batch)
        return round(max(0.1, batches_ahead * self.max_batch * self._recent_seconds_per_item), 3)

    def _withdraw(self, entries: list[Entry]) -> None:
        """Removes entries that have not started (a cancelled or failed request leaves the queue)."""
        queue = self._queues.get(entries[0].key) if entries else None
        if not queue:
            return
        waiting = [e for e in entries if e in queue]
        for e in waiting:
            queue.remove(e)
            if not e.future.done():
                e.future.cancel()
        if not queue:
            self._queues.pop(entries[0].key, None)
        self._set_depth(self._depth - len(waiting))

    def _set_depth(self, depth: int) -> None:
        self._depth = depth
        self._on_depth(depth)

    def _take(self) -> tuple[Hashable, list[Entry]] | None:
        """The oldest key's batch if it is full or its first item has waited `max_wait`, else None."""
        now = time.monotonic()
        for key, entries in self._queues.items():
            if len(entries) >= self.max_batch or now - entries[0].enqueued >= self.max_wait:
                batch, rest = entries[: self.max_batch], entries[self.max_batch:]
                if rest:
                    self._queues[key] = rest
                else:
                    del self._queues[key]
                self._set_depth(self._depth - len(batch))
                return key, batch
        return None

    def _next_deadline(self) -> float:
        oldest = min((entries[0].enqueued for entries in self._queues.values()), default=None)
        return 0.5 if oldest is None else max(0.0, oldest + self.max_wait - time.monotonic())

    async def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                self._wakeup.clear()
                holding = time.monotonic() if self._depth else None
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._next_deadline())
                except TimeoutError:
                    pass
                if holding is not None:
                    self._on_hold(time.monotonic() - holding)
                continue
            key, batch = taken
            batch = [e for e in batch if not e.future.done()]  # cancelled between take and run
            if not batch:
                continue
            started = time.monotonic()
            for e in batch:
                e.started = started
            results = await self.worker.run(self._run_safely, key, batch)
            self._recent_seconds_per_item = 0.7 * self._recent_seconds_per_item + 0.3 * (
                (time.monotonic() - started) / len(batch))
            for e, result in zip(batch, results, strict=True):
                if e.future.done():
                    continue
                if isinstance(result, BaseException):
                    e.future.set_exception(result)
                else:
                    e.future.set_result(result)

    def _run_safely(self, key: Hashable, batch: list[Entry]) -> list:
        """Runs the batch; on failure, each item alone, so the failure stays with its cause."""
        self._on_batch(key, len(batch))
        try:
            results = list(self._run_batch(key, [e.payload for e in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
            return results
        except Exception as exc:  # noqa: BLE001 - isolate the failing item below
            if len(batch) == 1:
                return [exc if isinstance(exc, LikenessError) else _internal(exc)]
            log.warning("batch of %d failed (%s); retrying items one by one", len(batch), exc)
        return [self._run_safely(key, [e])[0] for e in batch]


def _internal(exc: Exception) -> Exception:
    log.exception("generation failed", exc_info=exc)
    return exc
