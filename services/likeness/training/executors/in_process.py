"""Runs training inside the service process, on a bounded pool of worker threads.

At most `LIKENESS_TRAINING_MAX_CONCURRENT_RUNS` runs train at once (they share one CPU or GPU);
later runs wait QUEUED. Cancelling sets the run's event, so its loop stops before its next step;
the registry flag covers a CancelRun that reached another replica.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from likeness.training.dataset import Dataset
from likeness.training.registry import RunRecord
from likeness.training.runner import RunContext, execute

log = logging.getLogger("likeness.training.in_process")


class InProcessExecutor:
    name = "in_process"

    def __init__(self, ctx: RunContext, max_concurrent: int = 1):
        self.ctx = ctx
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="training-run")
        self._cancel: dict[str, threading.Event] = {}
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()

    def submit(self, run: RunRecord, dataset: Dataset | None = None) -> Future:
        event = threading.Event()
        with self._lock:
            self._cancel[run.run_id] = event
            future = self._pool.submit(self._run, run.run_id, dataset, event)
            self._futures[run.run_id] = future
        return future

    def _run(self, run_id: str, dataset: Dataset | None, event: threading.Event) -> str:
        try:
            if event.is_set():  # cancelled while queued; the registry already says CANCELLED
                return "cancelled"
            return execute(self.ctx, run_id, dataset=dataset, cancel=event)
        finally:
            with self._lock:
                self._cancel.pop(run_id, None)
                self._futures.pop(run_id, None)

    def cancel(self, run: RunRecord) -> None:
        with self._lock:
            event = self._cancel.get(run.run_id)
        if event is not None:
            event.set()

    def future(self, run_id: str) -> Future | None:
        with self._lock:
            return self._futures.get(run_id)

    def shutdown(self, wait: bool = True) -> None:
        """Stops every run at its next step (each saves its state as CANCELLED-by-shutdown)."""
        with self._lock:
            events = list(self._cancel.values())
        for event in events:
            event.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)
