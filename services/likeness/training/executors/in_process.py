"""Runs training inside the service process, on a bounded pool of worker threads.

At most `LIKENESS_TRAINING_MAX_CONCURRENT_RUNS` runs train at once (they share one CPU or GPU);
later runs wait QUEUED. Cancelling sets the run's event, so its loop stops before its next step;
the registry flag covers a CancelRun that reached another replica.

Every run this process trains is `owned` in the registry and heartbeated every
HEARTBEAT_SECONDS. `adopt_orphans` takes over in-process runs whose process died (a restarted
embedded service, a replica that was killed): the claim is an atomic conditional update, so one
replica wins, and the adopted run resumes from its newest saved state.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from likeness.core import tracing
from likeness.core.errors import FailedPrecondition
from likeness.training.dataset import Dataset
from likeness.training.registry import RunRecord
from likeness.training.registry.store import now
from likeness.training.runner import RunContext, execute
from likeness.training.spec import RunSpec

log = logging.getLogger("likeness.training.in_process")

HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 60.0  # no heartbeat for this long: the owner is dead


class InProcessExecutor:
    name = "in_process"

    def __init__(self, ctx: RunContext, max_concurrent: int = 1):
        self.ctx = ctx
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="training-run")
        self._cancel: dict[str, threading.Event] = {}
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat_loop, name="training-heartbeat", daemon=True)
        self._beat.start()

    def check(self, spec: RunSpec) -> None:
        """One process trains here: a data-parallel spec would leave its extra devices idle."""
        k = spec.kubernetes
        if k.world_size > 1:
            raise FailedPrecondition("spec.kubernetes.gpus", f"{k.gpus} GPUs x {k.nodes} nodes needs "
                                     f"{k.world_size} training processes; the in_process executor trains in one: "
                                     "use executor KUBERNETES_JOB, or gpus <= 1 and nodes 1")

    def submit(self, run: RunRecord, dataset: Dataset | None = None) -> Future | None:
        if not self.ctx.registry.claim(run.run_id, self.owner):
            return None  # cancelled (or ended) before it could be queued here
        event = threading.Event()
        with self._lock:
            self._cancel[run.run_id] = event
            # bound to the StartRun call's context: the run's span joins its trace
            future = self._pool.submit(tracing.bind(self._run), run.run_id, dataset, event)
            self._futures[run.run_id] = future
        return future

    def _run(self, run_id: str, dataset: Dataset | None, event: threading.Event) -> str:
        try:
            if event.is_set():  # cancelled while queued; the registry already says CANCELLED
                return "cancelled"
            with tracing.span("training run", {"run.id": run_id}):
                return execute(self.ctx, run_id, dataset=dataset, cancel=event)
        finally:
            with self._lock:
                self._cancel.pop(run_id, None)
                self._futures.pop(run_id, None)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                active = list(self._futures)
            try:
                self.ctx.registry.heartbeat(active, self.owner)
            except Exception as exc:  # noqa: BLE001 - a registry hiccup must not kill the heartbeat
                log.warning("heartbeat failed", extra={"error": str(exc)[:300]})

    def adopt_orphans(self, *, sole_process: bool = False) -> list[str]:
        """Claims and resubmits unfinished in-process runs whose owner is dead. `sole_process`
        (an embedded SQLite registry has one service process) treats every other owner as dead."""
        stale_before = None if sole_process else now() - timedelta(seconds=STALE_SECONDS)
        adopted = []
        for run in self.ctx.registry.unfinished(self.name):
            with self._lock:
                if run.run_id in self._futures:
                    continue
            if run.owner == self.owner or not self.ctx.registry.claim(run.run_id, self.owner,
                                                                     stale_before=stale_before):
                continue
            log.info("adopting run", extra={"run_id": run.run_id, "previous_owner": run.owner, "step": run.step})
            self.submit(self.ctx.registry.get(run.run_id, with_loss=False))
            adopted.append(run.run_id)
        return adopted

    def cancel(self, run: RunRecord) -> None:
        with self._lock:
            event = self._cancel.get(run.run_id)
        if event is not None:
            event.set()

    def future(self, run_id: str) -> Future | None:
        with self._lock:
            return self._futures.get(run_id)

    def shutdown(self, wait: bool = True) -> None:
        """Stops every run at its next step; each saves its state and ends CANCELLED."""
        self._stop.set()
        with self._lock:
            events = list(self._cancel.values())
        for event in events:
            event.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)
