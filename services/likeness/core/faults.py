"""Faults that were survived, reported to whoever is doing the work they happened in.

Code deep in a call path (the orchestrator's service client retrying UNAVAILABLE, the S3 store
retrying a frozen server) calls `report`; the orchestrator's job runner sets a sink for the task
that runs a job, so those faults land in that job's events and report instead of only in a log.
The sink travels in a context variable: asyncio tasks and `asyncio.to_thread` copy it, so a store
call made from a worker thread on behalf of a job still reaches that job. Without a sink (a
service process, a test) `report` does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    kind: str  # service_retry | store_stall | takeover
    message: str


SINK: ContextVar[Callable[[Fault], None] | None] = ContextVar("likeness_fault_sink", default=None)


def report(kind: str, message: str) -> None:
    """Hands a fault to the current sink; the sink must be callable from any thread."""
    sink = SINK.get()
    if sink is not None:
        sink(Fault(kind, message))
