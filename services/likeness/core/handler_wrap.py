"""Server interceptors that wrap each likeness.v1 method's handler once and reuse the wrapped one
(grpc.aio asks every interceptor again on every call; wrapping per call would cost a closure and
a namedtuple copy each time)."""

from __future__ import annotations

import grpc

PACKAGE_PREFIX = "/likeness.v1."


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses say how to wrap a handler (`wrap`) and, if not every likeness.v1 method, which
    methods (`wraps`); this class caches the result by method."""

    def __init__(self):
        self._wrapped: dict[str, object] = {}

    def wraps(self, method: str) -> bool:
        return method.startswith(PACKAGE_PREFIX)

    def wrap(self, handler, method: str):
        raise NotImplementedError

    async def intercept_service(self, continuation, handler_call_details):
        full = handler_call_details.method
        cached = self._wrapped.get(full)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or not self.wraps(full):
            return handler
        handler = self.wrap(handler, full)
        self._wrapped[full] = handler
        return handler
