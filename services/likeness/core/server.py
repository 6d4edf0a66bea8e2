"""The one server runtime every service uses.

`Service` describes what a service serves; `ServiceRuntime` runs it on an asyncio gRPC server with
health (NOT_SERVING until warm-up ends and again while shutting down; the `liveness` name SERVING
throughout), reflection (v1 and v1alpha), the observability interceptor, a Prometheus /metrics port
and graceful SIGTERM handling:

    SIGTERM -> health NOT_SERVING -> wait `drain_seconds` (load balancers stop sending)
            -> stop accepting, in-flight calls get `grace_seconds` -> service.shutdown()
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from likeness.core import auth, channels, metrics, reflection, tracing
from likeness.core.auth import BearerTokenInterceptor
from likeness.core.errors import LikenessError
from likeness.core.faults import FaultsInterceptor
from likeness.core.interceptor import ObservabilityInterceptor
from likeness.core.limits import LimitsInterceptor
from likeness.core.logging import configure as configure_logging
from likeness.core.settings import CommonSettings

log = logging.getLogger("likeness.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Health service name of the liveness probe: SERVING from start to exit, whatever readiness says
# (warming up, busy, draining). It is answered on the event loop, which the model workers never
# block (they run in threads), so an answer means the process is alive; no answer means it is not.
LIVENESS = "liveness"


@dataclass
class Service:
    """What one service serves. `servicers` pairs each generated `add_*_to_server` with its servicer;
    `service_names` are full protobuf names (health and reflection); `warmup` loads models and runs a
    first inference before the service reports SERVING."""

    name: str
    servicers: list[tuple[Callable, object]]
    service_names: list[str]
    warmup: Callable[[], Awaitable[None]] | None = None
    shutdown: Callable[[], Awaitable[None]] | None = None
    description: dict = field(default_factory=dict)  # logged at start-up: backends, models, engine

    @classmethod
    def single(cls, name: str, add_servicer: Callable, servicer: object, service_name: str, *,
               warmup: Callable[[], Awaitable[None]] | None = None, closers: Sequence[Callable[[], object]] = (),
               description: dict | None = None) -> Service:
        """A service with one servicer; `closers` (its executors, the image loader) run at shutdown."""
        async def shutdown() -> None:
            for close in closers:
                close()

        return cls(name, [(add_servicer, servicer)], [service_name], warmup, shutdown, description or {})


def server_options(settings: CommonSettings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
        # accept the keepalive pings our clients send during long calls; gRPC's default (one per 5 minutes
        # without data, two strikes) answers them with GOAWAY "too_many_pings" and fails every call on it
        ("grpc.http2.min_ping_interval_without_data_ms", channels.KEEPALIVE_TIME_MS // 2),
    ]
    if settings.max_connection_age_seconds > 0:  # clients reconnect and re-resolve: new replicas get calls
        options += [("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
                    ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_seconds * 1000))]
    return options


def server_credentials(settings: CommonSettings) -> grpc.ServerCredentials | None:
    """TLS when a certificate is mounted; mTLS (client certificates required) when a CA is too."""
    if not settings.tls_cert_file:
        return None
    cert = Path(settings.tls_cert_file).read_bytes()
    key = Path(settings.tls_key_file).read_bytes()
    ca = Path(settings.tls_ca_file).read_bytes() if settings.tls_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def service_auth(settings: CommonSettings, given: list) -> list[grpc.aio.ServerInterceptor]:
    """The LIKENESS_AUTH_TOKEN interceptor, unless the service brought its own bearer check (the
    orchestrator with LIKENESS_ORCHESTRATOR_AUTH_TOKEN)."""
    token = settings.auth_token.get_secret_value()
    if not token or any(isinstance(i, BearerTokenInterceptor) for i in given):
        return []
    open_prefixes = tuple(p for p, what in ((auth.HEALTH, "health"), (auth.REFLECTION, "reflection"))
                          if settings.exempt(what))
    return [BearerTokenInterceptor(token, open_prefixes)]


def start_metrics(settings: CommonSettings, port: int):
    """The Prometheus endpoint; behind the bearer token when auth is on and metrics are not exempt."""
    token = settings.auth_token.get_secret_value()
    if not token or settings.exempt("metrics"):
        return start_http_server(port, addr=settings.host)[0]
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # scrapes are not worth a log line each
            pass

    httpd = make_server(settings.host, port, auth.guard_wsgi(make_wsgi_app(), token), Server, handler_class=Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True, name="metrics").start()
    return httpd


class ServiceRuntime:
    def __init__(self, service: Service, settings: CommonSettings, *, drain_seconds: float | None = None,
                 interceptors: list[grpc.aio.ServerInterceptor] | None = None):
        self.service = service
        self.settings = settings
        self.drain_seconds = settings.drain_seconds if drain_seconds is None else drain_seconds
        self.health = health.aio.HealthServicer()
        # A call's SERVER span is current in everything the call runs. With no other interceptor, the
        # observability one starts it (one interceptor layer less per call); with others (auth), a
        # span interceptor comes first, so a call they reject still has its span.
        interceptors = [*(interceptors or []), *service_auth(settings, interceptors or [])]
        # LimitsInterceptor and FaultsInterceptor sit inside the observability one, which maps errors
        inner = [LimitsInterceptor(), FaultsInterceptor()]
        tracer = tracing.server_tracer() if tracing.configure(service.name, settings) else None
        log_ok = settings.log_calls == "all"
        if tracer is not None and interceptors:
            from likeness.core.tracing_grpc import ServerSpanInterceptor

            self.interceptors = [ServerSpanInterceptor(tracer), *interceptors, ObservabilityInterceptor(log_ok), *inner]
        else:
            self.interceptors = [*interceptors, ObservabilityInterceptor(log_ok, span_tracer=tracer), *inner]
        self.server = grpc.aio.server(interceptors=self.interceptors, options=server_options(settings))
        self.port = 0
        self.metrics_port = 0
        self._stopped = asyncio.Event()
        self._metrics_server = None
        self._ready = metrics.SERVICE_READY.labels(service.name)

    async def _set_health(self, status) -> None:
        for name in ("", *self.service.service_names):
            await self.health.set(name, status)
        self._ready.set(1 if status == SERVING else 0)

    async def start(self) -> int:
        """Binds and starts serving (health NOT_SERVING); returns the bound gRPC port."""
        for add, servicer in self.service.servicers:
            add(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable([*self.service.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name],
                          self.server)
        await self._set_health(NOT_SERVING)
        await self.health.set(LIVENESS, SERVING)
        address = f"{self.settings.host}:{self.settings.resolved_port(self.service.name)}"
        creds = server_credentials(self.settings)
        self.port = (self.server.add_secure_port(address, creds) if creds
                     else self.server.add_insecure_port(address))
        if self.port == 0:
            raise RuntimeError(f"could not bind {address}")
        if self.settings.metrics_enabled:
            self._metrics_server = start_metrics(self.settings, self.settings.resolved_metrics_port(self.service.name))
            self.metrics_port = self._metrics_server.server_port
        await self.server.start()
        log.info("listening", extra={"grpc_port": self.port, "metrics_port": self.metrics_port,
                                     **self.service.description})
        return self.port

    async def warm(self) -> None:
        if self.service.warmup is not None:
            await self.service.warmup()
        await self._set_health(SERVING)
        log.info("serving", extra={"service_names": self.service.service_names})

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, drain, then in-flight calls get `grace` seconds."""
        if self._stopped.is_set():
            return
        grace = self.settings.grace_seconds if grace is None else grace
        log.info("shutting down", extra={"drain_seconds": self.drain_seconds, "grace_seconds": grace})
        await self._set_health(NOT_SERVING)
        await asyncio.sleep(self.drain_seconds)
        await self.server.stop(grace)
        if self.service.shutdown is not None:
            await self.service.shutdown()
        tracing.flush()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self._stopped.set()
        log.info("stopped")

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.stop()))
        await self.start()
        try:
            await self.warm()
        except BaseException:
            # a failed warm-up (e.g. ModelMissing) stops the server inside the loop: left to the
            # garbage collector after the loop closed, grpc.aio's teardown can crash the process
            self.drain_seconds = 0.0
            await self.stop(grace=0)
            raise
        await self._stopped.wait()


def run(service_factory: Callable[[], Service], settings: CommonSettings,
        interceptors: list[grpc.aio.ServerInterceptor] | None = None) -> None:
    """Entry point of a service process: logging, build the service, serve until SIGTERM.
    A domain error while starting (ModelMissing: weights absent) ends the process with exit code 1
    and one line naming the cause, instead of a traceback."""
    module = service_factory.__module__
    name = module.split(".")[1] if module.startswith("likeness.") else "likeness"
    configure_logging(name, settings.log_level, settings.log_json)

    async def main() -> None:
        await ServiceRuntime(service_factory(), settings, interceptors=interceptors).serve_forever()

    try:
        asyncio.run(main())
    except LikenessError as exc:
        log.error("%s cannot start: %s", name, exc)
        print(f"{name} cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
