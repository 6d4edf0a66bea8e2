"""One interceptor records every call: duration histogram, in-flight gauge, request id (from the
`x-request-id` metadata or new), a JSON log line (failed calls always; OK calls when
LIKENESS_LOG_CALLS=all), the mapping of domain errors (core.errors) to gRPC status codes, and, when
given the SERVER spans of tracing (core.tracing_grpc), the call's span around all of it."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import grpc

from likeness.core import errors, metrics, tracing
from likeness.core.handler_wrap import WrappingInterceptor
from likeness.core.logging import request_id

log = logging.getLogger("likeness.rpc")

STATUS = {name: getattr(grpc.StatusCode, name) for name in (
    "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED",
    "UNAVAILABLE", "DEADLINE_EXCEEDED", "PERMISSION_DENIED", "UNAUTHENTICATED", "CANCELLED", "INTERNAL")}
# Infrastructure calls that would drown the latency figures of the real API.
UNRECORDED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def status_of(error: errors.LikenessError) -> grpc.StatusCode:
    return STATUS.get(error.code, grpc.StatusCode.INTERNAL)


# Status details travel in a header (grpc-message, 16 KiB limit for all metadata): a message that
# echoes a huge caller value would turn the answer into a client-side RESOURCE_EXHAUSTED.
MAX_DETAILS_CHARS = 2000


# gRPC's own retry machinery (A6 retry design) reads this trailer: an integer in milliseconds
# that replaces the client's back-off before its next attempt.
PUSHBACK = "grpc-retry-pushback-ms"


def pushback_ms(seconds: float) -> str:
    return str(max(0, round(seconds * 1000)))


async def abort_with(context: grpc.aio.ServicerContext, error: errors.LikenessError) -> None:
    if error.retry_after_seconds is not None:
        context.set_trailing_metadata(((PUSHBACK, pushback_ms(error.retry_after_seconds)),))
    message = error.message
    if len(message) > MAX_DETAILS_CHARS:
        message = message[:MAX_DETAILS_CHARS] + f"... ({len(message):,} characters)"
    await context.abort(status_of(error), message)


async def abort_internal(context: grpc.aio.ServicerContext, error: BaseException, rid: str) -> None:
    """An unexpected exception: INTERNAL (not gRPC's UNKNOWN) with the request id, so the caller can
    find the traceback in the service log; the exception's own text stays in the log."""
    if isinstance(error, NotImplementedError):  # a method the servicer does not implement (grpc's stubs)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "method not implemented by this service")
    tracing.record_exception(error)
    await context.abort(grpc.StatusCode.INTERNAL,
                        f"internal error ({type(error).__name__}); request id {rid}: the service log has the details")


class Undecodable:
    """What a request that is not valid protobuf deserialises to (a truncated or foreign body):
    the call then ends INVALID_ARGUMENT instead of gRPC's UNKNOWN."""

    def __init__(self, message_type: str, error: Exception):
        self.message_type, self.error = message_type, error

    def invalid(self) -> errors.InvalidArgument:
        return errors.InvalidArgument("request", f"body is not a valid {self.message_type} ({self.error})")


def _lenient(deserialize):
    def parse(data: bytes):
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError and friends: never the server's fault
            name = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
            return Undecodable(name.full_name if name is not None else "request message", exc)
    return parse


# What a handler passes on untouched (recorded, not mapped to a status): a cancelled call, an abort
# already sent, and for a stream the GeneratorExit of a client that went away.
_UNARY_PASS = (asyncio.CancelledError, grpc.aio.AbortError)
_STREAM_PASS = (*_UNARY_PASS, GeneratorExit)


class _Call:
    """Bookkeeping of one call, from the moment it comes in (request id, in-flight gauge, the SERVER
    span when tracing is on) to `finish` (duration, log line, span end)."""

    __slots__ = ("service", "method", "start", "in_flight", "rid", "log_ok", "spans", "started", "token",
                 "error")

    def __init__(self, service: str, method: str, context, log_ok: bool, spans=None):
        metadata = context.invocation_metadata()
        started = spans.start(metadata) if spans is not None else None
        self.service, self.method, self.log_ok, self.spans, self.started = service, method, log_ok, spans, started
        self.error: BaseException | None = None
        self.start = time.perf_counter()
        rid = ""
        for key, value in metadata or ():
            if key == "x-request-id":
                rid = value[:64]
                break
        self.rid = rid or uuid.uuid4().hex[:16]
        self.in_flight = metrics.RPC_IN_FLIGHT.labels(service, method)
        self.in_flight.inc()
        self.token = request_id.set(self.rid)

    async def fail(self, context, error: BaseException, passed: tuple) -> None:
        """A handler's exception: a domain error aborts with its status, an unexpected one with
        INTERNAL; what `passed` names is recorded and raised again; anything else is raised unrecorded."""
        if isinstance(error, errors.LikenessError):
            self.error = error
            await abort_with(context, error)
        elif isinstance(error, passed):
            self.error = error
            raise error
        elif isinstance(error, Exception):
            self.error = error
            await abort_internal(context, error, self.rid)
        else:
            raise error

    def finish(self, context) -> None:
        error = self.error
        elapsed = time.perf_counter() - self.start
        self.in_flight.dec()
        code = context.code() if context is not None else None
        if isinstance(error, (GeneratorExit, asyncio.CancelledError)):
            # grpc.aio cancels the handler both when the client cancels (or goes away) and when the
            # call's deadline passes: the remaining time tells the two apart. Neither is a server fault.
            code = grpc.StatusCode.DEADLINE_EXCEEDED if _expired(context) else grpc.StatusCode.CANCELLED
        elif error is not None and not isinstance(error, (errors.LikenessError, grpc.aio.AbortError)):
            code = grpc.StatusCode.INTERNAL if code is None else code
        name = "OK" if code is None else code.name
        metrics.RPC_DURATION.labels(self.service, self.method, name).observe(
            elapsed, tracing.exemplar(name in tracing.SERVER_FAULTS, elapsed, self.started and self.started[0]))
        if name in ("OK", "CANCELLED"):
            level = logging.INFO if self.log_ok else 0
        else:
            level = logging.ERROR if name == "INTERNAL" else logging.WARNING
        if level and log.isEnabledFor(level):
            log.log(level, "rpc", extra={"method": f"{self.service}/{self.method}", "code": name,
                                         "duration_ms": round(elapsed * 1000, 3)},
                    exc_info=error if name == "INTERNAL" and error is not None else None)
        # A stream closed because its client cancelled is finalised in another context, where the
        # token cannot be reset (ValueError); that context is discarded anyway.
        try:
            request_id.reset(self.token)
        except ValueError:
            pass
        if self.started is not None:
            self.spans.end(self.started, context, error)


def _expired(context) -> bool:
    try:
        remaining = context.time_remaining() if context is not None else None
    except Exception:  # a finished call's context may refuse; then it was not a deadline we can see
        return False
    return remaining is not None and remaining <= 0


def _wrapped(behavior, service: str, method: str, log_ok: bool, spans, streaming: bool):
    """The recording handler around a servicer method, unary or server-streaming. The per-call work
    sits in `_Call` so that the two kinds differ only in how they pass the answer on; each is one
    coroutine (or async generator) around the servicer's, nothing more on the path of a call."""
    if streaming:
        async def stream(request, context):
            call = _Call(service, method, context, log_ok, spans)
            try:
                if isinstance(request, Undecodable):
                    raise request.invalid()
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:
                await call.fail(context, exc, _STREAM_PASS)
            finally:
                call.finish(context)
        return stream

    async def unary(request, context):
        call = _Call(service, method, context, log_ok, spans)
        try:
            if isinstance(request, Undecodable):
                raise request.invalid()
            return await behavior(request, context)
        except BaseException as exc:
            await call.fail(context, exc, _UNARY_PASS)
        finally:
            call.finish(context)
    return unary


class ObservabilityInterceptor(WrappingInterceptor):
    """`span_tracer`: start each call's SERVER span here (tracing on, and no other interceptor sits
    between this one and the tracing one would be first): one interceptor layer, one wrapping
    coroutine and one metadata read less per call than a separate span interceptor. What tracing
    adds to a call is measured in docs/benchmarks.md ("tracing (OpenTelemetry) on and off")."""

    def __init__(self, log_ok_calls: bool = False, span_tracer=None):
        super().__init__()  # wrapped handlers are built once per method, not per call
        self._span_tracer = span_tracer
        # One JSON line per successful call costs ~60 us of a ~350 us loopback round trip on 2 cores
        # (bench/runtime.py), so access logs of OK calls are opt-in (LIKENESS_LOG_CALLS=all); failed
        # calls are always logged, with their request id.
        self.log_ok_calls = log_ok_calls

    def wraps(self, method: str) -> bool:
        return not method.startswith(UNRECORDED)

    def wrap(self, handler, full: str):
        _, service, method = full.split("/")
        service = service.rsplit(".", 1)[-1]
        if handler.request_deserializer is not None:
            handler = handler._replace(request_deserializer=_lenient(handler.request_deserializer))
        spans = None
        if self._span_tracer is not None:
            from likeness.core.tracing_grpc import ServerSpans

            spans = ServerSpans(self._span_tracer, full)
        log_ok = self.log_ok_calls
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrapped(handler.unary_unary, service, method, log_ok, spans, False))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrapped(handler.unary_stream, service, method, log_ok, spans, True))
        return handler
