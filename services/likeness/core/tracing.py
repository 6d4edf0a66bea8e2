"""OpenTelemetry tracing: one tracer provider per process, exporting over OTLP/gRPC.

Off unless `LIKENESS_TRACING_ENABLED=true`; then every call a service serves gets a server span
(core.tracing_grpc, context extracted from the `traceparent` metadata), every call made through
core.channels gets a client span and carries the caller's context, and the code adds child spans for
the work that matters (`span(...)`: image load and decode, store get/put, model run with its wait,
job stages and units of work). When off, no interceptor is installed and `span` is a shared no-op.

Sampling (core/tracing_sampling.py): parent-based with `tracing_sample_ratio` of new traces, plus,
when `tracing_keep_errors` or `tracing_keep_slower_than_seconds` is set, the failed and slow calls
among those the ratio left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import socket
import threading
import time

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, format_trace_id

from likeness.core.settings import CommonSettings
from likeness.core.tracing_sampling import KeepSlowAndFailed, sampler_for

log = logging.getLogger("likeness.tracing")

_tracer = trace.NoOpTracer()  # the provider's tracer once `configure` has made one
_provider = None  # the process's SDK TracerProvider, or None while tracing is off
_keep = None  # the KeepSlowAndFailed of the provider, when keeping is on
_lock = threading.Lock()
_global_set = threading.Event()


def enabled() -> bool:
    return _provider is not None


def configure(service: str, settings: CommonSettings, exporter=None):
    """The process's tracer provider for `settings` (created once, set as the global one), or None
    when tracing is off. `exporter` replaces the OTLP exporter (benchmarks)."""
    global _provider, _keep, _tracer
    if not settings.tracing_enabled:
        return None
    with _lock:
        if _provider is not None:
            return _provider
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=settings.tracing_endpoint, insecure=settings.tracing_insecure)
        created = Resource.create({"service.name": f"likeness-{service}", "service.namespace": "likeness",
                                   "service.instance.id": f"{socket.gethostname()}-{os.getpid()}"})
        resource = FixedHashResource(created.attributes, created.schema_url)
        keeping = settings.tracing_keep_errors or settings.tracing_keep_slower_than_seconds > 0
        sampler = sampler_for(settings.tracing_sample_ratio, record_unsampled=keeping)
        provider = TracerProvider(resource=resource, sampler=sampler)
        batch = BatchSpanProcessor(exporter)
        if keeping and settings.tracing_sample_ratio < 1.0:
            _keep = KeepSlowAndFailed(batch, settings.tracing_keep_errors, settings.tracing_keep_slower_than_seconds)
            provider.add_span_processor(_keep)
        else:
            provider.add_span_processor(batch)
        if not _global_set.is_set():  # the API allows one global provider per process
            _global_set.set()
            trace.set_tracer_provider(provider)
        _provider, _tracer = provider, provider.get_tracer("likeness")
        log.info("tracing on", extra={"tracing_endpoint": settings.tracing_endpoint,
                                      "tracing_sampler": sampler.get_description()})
        return provider


class FixedHashResource(Resource):
    """A resource whose hash is computed once: the OTLP encoder hashes the resource of every span it
    exports (to group spans by resource), and Resource.__hash__ serialises every attribute to JSON."""

    def __init__(self, attributes, schema_url=None):
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def flush(timeout_ms: int = 5000) -> None:
    """Exports what is buffered (called when a service stops, so its last spans are not lost)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


# --- what the code calls ------------------------------------------------------------------------

_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)


def _in_trace() -> bool:
    return _provider is not None and trace.get_current_span().is_recording()


def span(name: str, attributes: dict | None = None):
    """A child span of the current one, as a context manager (`with span("store.get"): ...`).
    Outside a recorded span (tracing off, an unsampled call, start-up work) it is a no-op: work
    done outside any call never starts a trace of its own."""
    if not _in_trace():
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=attributes)


def current_trace_id() -> str:
    """32 hex digits of the current trace, or "" when there is none (tracing off)."""
    ctx = trace.get_current_span().get_span_context()
    return format_trace_id(ctx.trace_id) if ctx.is_valid else ""


# Status codes (names) that are the server's fault: a span ending with one has status ERROR.
SERVER_FAULTS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})


def exemplar(failed: bool = False, seconds: float = 0.0, current=None) -> dict | None:
    """Exemplar labels for a histogram observation made inside `current` (by default the current
    span): its trace id, when that span will be exported (sampled, or kept for being failed or
    slow), else None."""
    if _provider is None:
        return None
    if current is None:
        current = trace.get_current_span()
    ctx = current.get_span_context()
    if not ctx.is_valid:
        return None
    if ctx.trace_flags.sampled or (_keep is not None and current.is_recording() and _keep.keeps(failed, seconds)):
        return {"trace_id": f"{ctx.trace_id:032x}"}  # format_trace_id, one call less on every traced call
    return None


def mark_failed(message: str) -> None:
    trace.get_current_span().set_status(Status(StatusCode.ERROR, message[:500]))


def record_exception(error: BaseException) -> None:
    """The exception as an event of the current span (a no-op outside a recorded span): an error the
    server answers with a status of its own would otherwise leave no traceback in the trace."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(error)


def traceparent() -> str:
    """The W3C `traceparent` of the current span ("" when none): stored with a job, or passed to a
    training Job as its TRACEPARENT environment variable."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def span_under(name: str, parent_traceparent: str, attributes: dict | None = None):
    """A span whose parent is the (remote) span named by a stored `traceparent`; a new trace when
    it is empty or invalid."""
    ctx = propagate.extract({"traceparent": parent_traceparent}) if parent_traceparent else otel_context.Context()
    return _tracer.start_as_current_span(name, context=ctx, attributes=attributes)


def bind(fn):
    """`fn` to run in another thread (run_in_executor does not carry contextvars): inside the
    current trace context."""
    return functools.partial(contextvars.copy_context().run, fn)


async def run_on_worker(executor, fn, *args):
    """`fn(*args)` on a model worker (a one-thread executor) inside span `model.run`, whose
    `model.wait_ms` says how long the call queued behind others for the worker (an attribute, not
    a span of its own: one span less per model call, see docs/benchmarks.md)."""
    if not _in_trace():
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    queued = time.perf_counter()

    def work():
        waited = round((time.perf_counter() - queued) * 1000, 3)
        with _tracer.start_as_current_span("model.run", attributes={"model.wait_ms": waited}):
            return fn(*args)

    return await asyncio.get_running_loop().run_in_executor(executor, bind(work))


def record_interval(name: str, start: float, end: float, attributes: dict | None = None) -> None:
    """A finished child span from two `time.monotonic()` readings (work timed by other code, such
    as the wait of a request in a batching queue)."""
    if not _in_trace():
        return
    now_ns, now = time.time_ns(), time.monotonic()
    started = _tracer.start_span(name, start_time=now_ns - int((now - start) * 1e9), attributes=attributes)
    started.end(end_time=now_ns - int((now - end) * 1e9))


def server_tracer():
    """The tracer of SERVER spans, or None when off (core.server puts the spans in place)."""
    return None if _provider is None else _provider.get_tracer("likeness.grpc")


def aio_client_interceptors() -> list:
    """Client interceptors that start a CLIENT span and send `traceparent` (empty when off)."""
    if _provider is None:
        return []
    from likeness.core import tracing_grpc

    return tracing_grpc.aio_client_interceptors(_provider)


def traced_sync_channel(channel):
    """`channel` with client spans and context propagation (unchanged when off)."""
    if _provider is None:
        return channel
    from likeness.core import tracing_grpc

    return tracing_grpc.traced_sync_channel(channel, _provider)


def start_from_environment(name: str, attributes: dict | None = None):
    """For a process started by another one (a training Job): a span under the TRACEPARENT variable."""
    return span_under(name, os.environ.get("TRACEPARENT", ""), attributes)


def shutdown() -> None:
    """Exports what is buffered and forgets the provider: tracing is off again in this process
    (tests configure it more than once in one process; our code uses only this module's provider)."""
    global _provider, _keep, _tracer
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _provider, _keep, _tracer = None, None, trace.NoOpTracer()
