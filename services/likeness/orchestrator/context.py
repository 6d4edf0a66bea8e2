"""What a running workflow sees: its job, the service clients, the artifact store, and helpers to
report stages, progress, warnings and item outcomes, to reuse finished work, and to notice a cancel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from likeness.core import faults, metrics, tracing
from likeness.core.errors import Cancelled
from likeness.core.faults import Fault
from likeness.core.store import ArtifactStore
from likeness.core.workid import work_id
from likeness.orchestrator.clients import ServiceClient, ServiceClients
from likeness.orchestrator.jobstore import JobRecord, JobStore
from likeness.orchestrator.provenance import ModelLedger


@dataclass
class Outcome:
    """What a workflow returns: headline figures, the manifest body, and the report's sections."""

    summary: dict
    manifest: dict
    report: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Why the job did not deliver what it promised (a storyboard frame missing, ...): the job ends
    # FAILED with this reason, and its manifest and report are still written with what it has.
    failure: str = ""
    # One line on how the job ended when it succeeded with a caveat, for example the frames a
    # storyboard run without `require_all_frames` is missing.
    note: str = ""


class JobContext:
    def __init__(self, job: JobRecord, jobs: JobStore, store: ArtifactStore, clients: ServiceClients):
        self.job = job
        self.kind = job.kind
        self.job_id = job.job_id
        self.jobs = jobs
        self.store = store
        self.clients = clients
        self.cancel_requested = False
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.reused = 0  # work items answered from the job store instead of a service call
        self.computed = 0
        self.models = ModelLedger()
        # What the workflow has so far, for the manifest and report of a job that stops early.
        self.partial: Callable[[], Outcome] | None = None
        self._last_progress = 0.0
        self.current_stage = ""
        self.faults: list[Fault] = []  # survived faults (core.faults), shown as events and in the report
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fault_events: set[asyncio.Task] = set()

    def collect_faults(self) -> None:
        """Makes this task (and what it starts) report faults to this job; call inside the job's task."""
        self._loop = asyncio.get_running_loop()
        faults.SINK.set(self._fault_sink)

    def _fault_sink(self, fault: Fault) -> None:  # any thread
        self.faults.append(fault)
        self._loop.call_soon_threadsafe(self._fault_event, fault)

    def _fault_event(self, fault: Fault) -> None:
        task = asyncio.ensure_future(self.event("WARNING", f"{fault.kind}: {fault.message}", self.current_stage))
        self._fault_events.add(task)
        task.add_done_callback(self._fault_events.discard)

    def fault(self, kind: str, message: str) -> None:
        self._fault_sink(Fault(kind, message))

    async def flush_faults(self) -> None:
        """Waits until every fault so far is an event (before the job's FINISHED event)."""
        await asyncio.sleep(0)  # lets call_soon_threadsafe callbacks create their tasks
        await asyncio.gather(*list(self._fault_events), return_exceptions=True)

    async def event(self, type_: str, message: str = "", stage: str = "", progress: dict | None = None) -> None:
        await asyncio.to_thread(self.jobs.add_event, self.job_id, type_, stage, message, progress)

    @asynccontextmanager
    async def stage(self, name: str):
        self.check_cancel()
        self.current_stage = name
        with tracing.span(f"stage {name}", {"job.id": self.job_id, "job.stage": name}):
            await self.event("STAGE_STARTED", f"stage {name}", name)
            start = time.perf_counter()
            try:
                yield
            finally:
                elapsed = time.perf_counter() - start
                self.timings[name] = self.timings.get(name, 0.0) + elapsed
                metrics.STAGE_DURATION.labels(self.kind, name).observe(elapsed, tracing.exemplar())

    async def progress(self, stage: str, done: int, total: int, message: str = "") -> None:
        """Progress events at most every 0.5 s, and always for the last item."""
        now = time.monotonic()
        if done < total and now - self._last_progress < 0.5:
            return
        self._last_progress = now
        await self.event("PROGRESS", message, stage, {"stage": stage, "done": done, "total": total})

    async def warn(self, message: str, stage: str = "") -> None:
        self.warnings.append(message)
        await self.event("WARNING", message, stage)

    async def item_done(self, stage: str, outcome: str, message: str) -> None:
        await self.items_done(stage, [(outcome, message)])

    async def items_done(self, stage: str, items: list[tuple[str, str]]) -> None:
        """(outcome, message) of finished items: counted in the metrics, and one ITEM_DONE event each."""
        for outcome, _ in items:
            metrics.ITEMS.labels("orchestrator", stage, outcome).inc()
        await asyncio.to_thread(self.jobs.add_events, self.job_id, [("ITEM_DONE", stage, m) for _, m in items])

    def check_cancel(self) -> None:
        if self.cancel_requested:
            raise Cancelled("job_id", f"job {self.job_id} was cancelled")

    async def call(self, client: ServiceClient, method: str, request, *, work: str, inputs: dict | None = None):
        """`client.call(method, request)` as one unit of work `work` (see `cached`); `inputs` identify
        it, by default the serialised request."""
        if inputs is None:
            inputs = {"request": request.SerializeToString().hex()}
        return await self.cached(work, inputs, lambda: client.call(method, request), client.response_type(method))

    async def cached(self, kind: str, inputs: dict, call, response_type):
        """Result of one unit of work: from the job store when a previous attempt finished it,
        else `await call()`, stored by content id before it is used."""
        wid = work_id(kind, inputs)
        with tracing.span(f"work {kind}", {"work.id": wid}) as span:
            blob = await asyncio.to_thread(self.jobs.get_result, wid)
            if blob is not None:
                self.reused += 1
                span.set_attribute("work.reused", True)
                return response_type.FromString(blob)
            self.check_cancel()
            response = await call()
            self.computed += 1
            await asyncio.to_thread(self.jobs.put_result, wid, kind, response.SerializeToString())
            return response
