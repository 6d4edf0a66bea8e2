"""Bearer-token authentication: the orchestrator's external API (LIKENESS_ORCHESTRATOR_AUTH_TOKEN)
and, optionally, every service (LIKENESS_AUTH_TOKEN, installed by core.server; clients built by
core.channels send it).

The token comes from a Secret through the environment; comparison is constant-time. Health and
reflection stay open by default so Kubernetes probes and grpcurl work without credentials
(LIKENESS_AUTH_EXEMPT decides); the metrics endpoint is guarded by `guard_wsgi`.
"""

from __future__ import annotations

import hmac

import grpc

OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")
HEALTH, REFLECTION = OPEN


def expected_header(token: str) -> bytes:
    return f"Bearer {token}".encode()


def matches(given: str, expected: bytes) -> bool:
    return bool(given) and hmac.compare_digest(given.encode("latin-1", "replace"), expected)


def guard_wsgi(app, token: str):
    """A WSGI app that answers 401 unless the request carries the bearer token (the metrics port)."""
    expected = expected_header(token)

    def guarded(environ, start_response):
        if matches(environ.get("HTTP_AUTHORIZATION", ""), expected):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")])
        return [b"authorization: missing or wrong bearer token\n"]

    return guarded


def _deny(message: str):
    async def abort(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def abort_stream(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover

    return abort, abort_stream


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str, open_prefixes: tuple[str, ...] = OPEN):
        if not token:
            raise ValueError("empty token")
        self._expected = expected_header(token)
        self._open = open_prefixes

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or (self._open and handler_call_details.method.startswith(self._open)):
            return handler
        given = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, str) else value.decode("latin-1")
                break
        if matches(given, self._expected):
            return handler
        message = ("authorization: missing bearer token" if not given
                   else "authorization: bearer token does not match")
        unary, stream = _deny(message)
        if handler.unary_stream:
            return handler._replace(unary_stream=stream)
        return handler._replace(unary_unary=unary)


class _BearerMetadata(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Client side: adds the bearer token to every call of a channel."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details):
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return details._replace(metadata=metadata)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


def client_interceptors(token: str) -> list:
    return [_BearerMetadata(token)] if token else []
