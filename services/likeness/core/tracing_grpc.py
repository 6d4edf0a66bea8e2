"""Spans of gRPC calls: a SERVER span per call served, a CLIENT span per call made (with the
caller's context sent as `traceparent` metadata).

Client side: opentelemetry-instrumentation-grpc's interceptors. Server side: `ServerSpanInterceptor`,
a lean interceptor of our own: the instrumentation's server interceptor wraps every call anew,
wraps each call's context in a proxy object and parses peer addresses and user agents, which added
about a third more to an empty call than this one (measured with bench/runtime.py's method while
building it). Both follow the OpenTelemetry RPC
conventions (span name `/package.Service/Method`, `rpc.*` attributes, status ERROR only for server
faults), so traces look the same in Tempo or Jaeger as with the instrumentation alone.
"""

from __future__ import annotations

import asyncio

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from likeness.core import tracing
from likeness.core.errors import LikenessError
from likeness.core.tracing_span import SPAN_KEY, FastServerSpans, fast_path_supported

UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# What the RPC conventions count as the server's fault; other codes (INVALID_ARGUMENT, NOT_FOUND,
# ...) are the caller's and leave the span's status unset.
SERVER_FAULTS = frozenset(getattr(grpc.StatusCode, name) for name in tracing.SERVER_FAULTS)
_PROPAGATED = ("traceparent", "tracestate", "baggage")


def traced_call(details) -> bool:
    """Filter of the instrumentation's client interceptors (which hand over `method` or `full_method`)."""
    method = getattr(details, "full_method", None) or details.method
    method = method if isinstance(method, str) else method.decode()
    return not method.startswith(UNTRACED_PREFIXES)


def _finish(span, context, error: BaseException | None) -> None:
    code = context.code()
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        code = grpc.StatusCode.CANCELLED  # the client cancelled or went away: not a server fault
    elif code is None and error is not None and not isinstance(error, (grpc.aio.AbortError, LikenessError)):
        code = grpc.StatusCode.UNKNOWN  # an exception that grpc turns into UNKNOWN
    if code is None or code is grpc.StatusCode.OK:
        return  # the span started with status code 0 (one attribute write less per call)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {context.details() or error or ''}"[:500]))
    if code in SERVER_FAULTS and error is not None and not isinstance(error, (grpc.aio.AbortError, LikenessError)):
        span.record_exception(error)


class ServerSpans:
    """The SERVER spans of one method: `start` when a call comes in (current from then on, child of
    the caller's span when the call's metadata carries `traceparent`), `end` when it is done. Used by
    ServerSpanInterceptor, or by the observability interceptor itself when no other interceptor sits
    between them (core/interceptor.py)."""

    __slots__ = ("tracer", "name", "attributes", "fast")

    def __init__(self, tracer, full_method: str):
        service, _, method = full_method[1:].partition("/")
        self.tracer, self.name = tracer, full_method
        self.attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                           "rpc.grpc.status_code": 0}
        self.fast = FastServerSpans(tracer, full_method, self.attributes) if fast_path_supported(tracer) else None

    def start(self, metadata):
        carrier = None  # the propagation headers; most calls from outside have none
        for key, value in metadata or ():
            if key in _PROPAGATED:
                carrier = carrier or {}
                carrier[key] = value
        context = propagate.extract(carrier) if carrier else None
        if self.fast is not None:
            span = self.fast.start(context)
        else:
            span = self.tracer.start_span(self.name, context=context, kind=SpanKind.SERVER, attributes=self.attributes)
        # trace.set_span_in_context(span) and attach, in two calls where those take eight
        runtime = otel_context._RUNTIME_CONTEXT  # noqa: SLF001
        return span, runtime.attach(otel_context.Context({**runtime.get_current(), SPAN_KEY: span}))

    @staticmethod
    def end(started, context, error: BaseException | None) -> None:
        span, token = started
        if error is not None or context.code() is not None:  # else the call ended OK: nothing to add
            _finish(span, context, error)
        span.end()
        # a stream closed because its client cancelled is finalised in another context, where the
        # token cannot be reset (ValueError); otel_context.detach would log that as an error
        try:
            otel_context._RUNTIME_CONTEXT.detach(token)  # noqa: SLF001
        except ValueError:
            pass


def aio_client_interceptors(provider) -> list:
    from opentelemetry.instrumentation.grpc import aio_client_interceptors as make

    return make(provider, filter_=traced_call)


def traced_sync_channel(channel, provider):
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    return intercept_channel(channel, client_interceptor(provider, filter_=traced_call))


class ServerSpanInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span around every call (health and reflection excepted). Installed before every other
    interceptor, so their work (metrics, logs, exemplars) happens inside the span. A wrapped handler
    is reused while the inner interceptors keep answering the same handler object; one of them
    (bearer auth) may answer a call differently, and that answer is wrapped on its own."""

    def __init__(self, tracer):
        self._tracer = tracer
        self._wrapped: dict[str, tuple[object, object]] = {}  # method -> (inner handler, wrapped)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        full = handler_call_details.method
        cached = self._wrapped.get(full)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if handler is None or full.startswith(UNTRACED_PREFIXES):
            return handler
        spans = ServerSpans(self._tracer, full)
        if handler.unary_unary:
            wrapped = handler._replace(unary_unary=_traced(handler.unary_unary, spans, False))
        elif handler.unary_stream:
            wrapped = handler._replace(unary_stream=_traced(handler.unary_stream, spans, True))
        else:
            return handler
        self._wrapped[full] = (handler, wrapped)
        return wrapped


def _traced(behavior, spans: ServerSpans, streaming: bool):
    """The handler that holds a SERVER span around a servicer method, unary or server-streaming:
    one coroutine (or async generator) around the servicer's, nothing more on the path of a call."""
    if streaming:
        async def stream(request, context):
            started = spans.start(context.invocation_metadata())
            try:
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:
                spans.end(started, context, exc)
                raise
            spans.end(started, context, None)
        return stream

    async def unary(request, context):
        started = spans.start(context.invocation_metadata())
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            spans.end(started, context, exc)
            raise
        spans.end(started, context, None)
        return response
    return unary
