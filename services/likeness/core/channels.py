"""gRPC client channels between services and from callers: round-robin over every address behind
a target (headless Services resolve to one address per pod), retries on UNAVAILABLE and
RESOURCE_EXHAUSTED with backoff, message size limits and optional (m)TLS."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from likeness.core import tracing
from likeness.core.settings import CommonSettings


def service_config(max_attempts: int = 5) -> str:
    """Round-robin always; a retry policy when more than one attempt is wanted (gRPC requires >= 2)."""
    config: dict = {"loadBalancingConfig": [{"round_robin": {}}]}
    if max_attempts >= 2:
        config["methodConfig"] = [{
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": max_attempts,
                "initialBackoff": "0.1s",
                "maxBackoff": "5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
            },
        }]
    return json.dumps(config)


def normalise_target(target: str) -> str:
    """`host:port` -> `dns:///host:port`; `a:1,b:2` -> `ipv4:a:1,b:2` (a static list of replicas)."""
    if "://" in target or target.startswith(("ipv4:", "ipv6:", "unix:")):
        return target
    if "," in target:
        return "ipv4:" + target
    return f"dns:///{target}"


# Clients ping a connection every KEEPALIVE_TIME_MS while calls are in flight, without limit: a pod that
# vanished without closing its connection (a lost node) is noticed within a ping timeout, even during a
# generation call that sends nothing for minutes. Servers accept pings that often (core.server).
KEEPALIVE_TIME_MS = 30_000


def channel_options(settings: CommonSettings | None, max_attempts: int = 5) -> list[tuple[str, object]]:
    limit = settings.max_message_bytes if settings else 32 * 1024 * 1024
    return [
        ("grpc.service_config", service_config(max_attempts)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.http2.max_pings_without_data", 0),
        # re-resolve DNS quickly when pods come and go
        ("grpc.dns_min_time_between_resolutions_ms", 5_000),
    ]


def channel_credentials(settings: CommonSettings | None) -> grpc.ChannelCredentials | None:
    if settings is None or not settings.tls_ca_file:
        return None
    ca = Path(settings.tls_ca_file).read_bytes()
    cert = Path(settings.tls_cert_file).read_bytes() if settings.tls_cert_file else None
    key = Path(settings.tls_key_file).read_bytes() if settings.tls_key_file else None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def aio_channel(target: str, settings: CommonSettings | None = None, *, max_attempts: int = 5) -> grpc.aio.Channel:
    """With LIKENESS_AUTH_TOKEN set, every call carries it (services that require it accept it)."""
    from likeness.core.auth import client_interceptors

    opts = channel_options(settings, max_attempts)
    creds = channel_credentials(settings)
    target = normalise_target(target)
    # the caller's trace context and, with LIKENESS_AUTH_TOKEN set, the bearer token on every call
    interceptors = [*tracing.aio_client_interceptors(),
                    *client_interceptors(settings.auth_token.get_secret_value() if settings else "")] or None
    if creds is not None:
        return grpc.aio.secure_channel(target, creds, options=opts, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)


def sync_channel(target: str, settings: CommonSettings | None = None, *, max_attempts: int = 5) -> grpc.Channel:
    opts = channel_options(settings, max_attempts)
    creds = channel_credentials(settings)
    target = normalise_target(target)
    channel = grpc.secure_channel(target, creds, options=opts) if creds is not None else \
        grpc.insecure_channel(target, options=opts)
    return tracing.traced_sync_channel(channel)


def health_status(address: str, service: str = "", timeout: float = 1.0) -> str:
    """`SERVING`, `NOT_SERVING`, ... from the gRPC health service at `address`, or the status code
    name (`UNAVAILABLE`, ...) when the call fails: what probes, `likeness up` and the tests ask."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with sync_channel(address, max_attempts=1) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
