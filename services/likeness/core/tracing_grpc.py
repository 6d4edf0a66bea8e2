"""Spans of gRPC calls: a SERVER span per call served, a CLIENT span per call made (with the
caller's context sent as `traceparent` metadata).

Client side: opentelemetry-instrumentation-grpc's interceptors. Server side: `ServerSpans`, a lean
interceptor of our own: the instrumentation's server interceptor also wraps every call's context
in a proxy object and parses peer addresses and user agents, which made tracing cost more than the
10% of an empty call allowed for it (bench/runtime.py). Both follow the OpenTelemetry RPC
conventions (span name `/package.Service/Method`, `rpc.*` attributes, status ERROR only for server
faults), so traces look the same in Tempo or Jaeger as with the instrumentation alone.
"""

from __future__ import annotations

import grpc
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# What the RPC conventions count as the server's fault; other codes (INVALID_ARGUMENT, NOT_FOUND,
# ...) are the caller's and leave the span's status unset.
SERVER_FAULTS = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
                           grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})
_PROPAGATED = ("traceparent", "tracestate", "baggage")


def traced_call(details) -> bool:
    """Filter of the instrumentation's client interceptors (which hand over `method` or `full_method`)."""
    method = getattr(details, "full_method", None) or details.method
    method = method if isinstance(method, str) else method.decode()
    return not method.startswith(UNTRACED_PREFIXES)


def _parent(metadata):
    carrier = {key: value for key, value in metadata or () if key in _PROPAGATED}
    return propagate.extract(carrier) if carrier else None


def _finish(span, context, error: BaseException | None) -> None:
    code = context.code()
    if code is None and error is not None and not isinstance(error, grpc.aio.AbortError):
        code = grpc.StatusCode.UNKNOWN  # an exception that grpc turns into UNKNOWN
    if code is None:
        code = grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {context.details() or error or ''}"[:500]))
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        span.record_exception(error)


class ServerSpans(grpc.aio.ServerInterceptor):
    """One SERVER span per call (health and reflection excepted), current while the call runs, child
    of the caller's span when the call carries `traceparent`. Installed before every other
    interceptor, so their work (metrics, logs) happens inside the span. Handlers are wrapped per
    call, never cached: an inner interceptor (bearer auth) may answer each call differently."""

    def __init__(self, tracer):
        self._tracer = tracer

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or full.startswith(UNTRACED_PREFIXES):
            return handler
        service, _, method = full[1:].partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        if handler.unary_unary:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, full, attributes))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, full, attributes))
        return handler

    def _start(self, name, context, attributes):
        return self._tracer.start_as_current_span(name, context=_parent(context.invocation_metadata()),
                                                  kind=SpanKind.SERVER, attributes=attributes,
                                                  record_exception=False, set_status_on_exception=False)

    def _unary(self, behavior, name, attributes):
        async def handler(request, context):
            with self._start(name, context, attributes) as span:
                error = None
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    _finish(span, context, error)
        return handler

    def _stream(self, behavior, name, attributes):
        async def handler(request, context):
            with self._start(name, context, attributes) as span:
                error = None
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    _finish(span, context, error)
        return handler


def server_interceptors(provider) -> list:
    return [ServerSpans(provider.get_tracer("likeness.grpc"))]


def aio_client_interceptors(provider) -> list:
    from opentelemetry.instrumentation.grpc import aio_client_interceptors as make

    return make(provider, filter_=traced_call)


def traced_sync_channel(channel, provider):
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    return intercept_channel(channel, client_interceptor(provider, filter_=traced_call))
