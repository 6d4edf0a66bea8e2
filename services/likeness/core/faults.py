"""Faults that were survived, reported to whoever is doing the work they happened in.

Code deep in a call path (the orchestrator's service client retrying UNAVAILABLE, the S3 store
retrying a frozen server) calls `report`; the orchestrator's job runner sets a sink for the task
that runs a job, so those faults land in that job's events and report instead of only in a log.
The sink travels in a context variable: asyncio tasks and `asyncio.to_thread` copy it, so a store
call made from a worker thread on behalf of a job still reaches that job. In a service process,
`FaultsInterceptor` is the sink of each call and hands what it collected back to the caller in a
trailer, which the orchestrator's service client reports in turn. Without a sink `report` does
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from likeness.core.handler_wrap import WrappingInterceptor


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


# -- across a call: a service's survived faults travel back to its caller in a trailer ------------

TRAILER = "likeness-faults"
MAX_SENT = 8  # faults per call; metadata is small (16 KiB for all of it)
MAX_MESSAGE = 300


def encode(found: list[Fault]) -> str:
    shown = [[f.kind, f.message[:MAX_MESSAGE]] for f in found[:MAX_SENT]]
    if len(found) > MAX_SENT:
        shown.append(["more", f"{len(found) - MAX_SENT} more faults not listed"])
    return json.dumps(shown, ensure_ascii=True)


def decode(value: str) -> list[Fault]:
    """The faults of a trailer; anything malformed is ignored (a fault report must not fail a call)."""
    try:
        items = json.loads(value)
        return [Fault(str(kind)[:32], str(message)[:MAX_MESSAGE]) for kind, message in items[:MAX_SENT + 1]]
    except (ValueError, TypeError):
        return []


def report_trailer(trailing_metadata, source: str) -> None:
    """Reports the faults a called service sent back, naming it (`detection.Assess`)."""
    for key, value in trailing_metadata or ():
        if key == TRAILER:
            for fault in decode(value if isinstance(value, str) else value.decode("ascii", "replace")):
                report(fault.kind, f"in {source}: {fault.message}")


def _collecting(behavior):
    async def handler(request, context):
        found: list[Fault] = []
        token = SINK.set(found.append)  # this call's task; worker threads it starts copy the context
        try:
            response = await behavior(request, context)
        finally:
            SINK.reset(token)
        if found:
            context.set_trailing_metadata(((TRAILER, encode(found)),))
        return response
    return handler


class FaultsInterceptor(WrappingInterceptor):
    """Collects the faults a unary call survived (an S3 stall inside the service) and returns them
    to the caller in the `likeness-faults` trailer, so the orchestrator can put them in the job."""

    def wrap(self, handler, method: str):
        if not handler.unary_unary:
            return handler
        return handler._replace(unary_unary=_collecting(handler.unary_unary))
