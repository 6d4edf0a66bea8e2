"""Bearer-token authentication for a service's external API (the orchestrator's).

The token comes from a Secret through the environment; comparison is constant-time. Health and
reflection stay open so Kubernetes probes and grpcurl work without credentials.
"""

from __future__ import annotations

import hmac

import grpc

OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _deny(message: str):
    async def abort(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def abort_stream(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover

    return abort, abort_stream


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str):
        if not token:
            raise ValueError("empty token")
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN):
            return handler
        given = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, str) else value.decode("latin-1")
                break
        if given and hmac.compare_digest(given.encode("latin-1", "replace"), self._expected):
            return handler
        message = ("authorization: missing bearer token" if not given
                   else "authorization: bearer token does not match")
        unary, stream = _deny(message)
        if handler.unary_stream:
            return handler._replace(unary_stream=stream)
        return handler._replace(unary_unary=unary)
