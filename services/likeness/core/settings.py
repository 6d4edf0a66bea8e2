"""Typed settings from `LIKENESS_*` environment variables, read once per process.

`CommonSettings` holds what every service reads; each service subclasses it with its own fields
(named with the service prefix, so `detection_backend` is `LIKENESS_DETECTION_BACKEND`) and its
default port. Secrets (store keys, tokens) are `SecretStr`, so they never appear in logs or reprs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Default gRPC ports; the metrics port is the gRPC port + 1000 unless set.
PORTS = {
    "orchestrator": 50050,
    "detection": 50051,
    "generation": 50052,
    "embedding": 50053,
    "restoration": 50054,
    "training": 50055,
}


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIKENESS_", extra="ignore", frozen=True)

    # server
    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 in a pod")
    port: int = Field(-1, ge=-1, le=65535, description="gRPC port; -1 = the service's default, 0 = any free port")
    metrics_port: int = Field(-1, ge=-1, le=65535, description="-1 = gRPC port + 1000; 0 = any free port")
    metrics_enabled: bool = True
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    grace_seconds: float = Field(20.0, ge=0, description="in-flight calls may finish this long after SIGTERM")
    drain_seconds: float = Field(2.0, ge=0, description="NOT_SERVING this long before the port closes")
    # gRPC clients resolve DNS when they connect and again only when a connection breaks, so a
    # replica added behind a headless Service gets no traffic from existing channels until
    # something closes them. A maximum connection age makes every client reconnect (and so
    # re-resolve) at least this often; calls in flight get the grace period to finish first.
    # 0 = connections live forever (the embedded stack has one replica of each service).
    max_connection_age_seconds: float = Field(0.0, ge=0, le=86_400)
    max_connection_age_grace_seconds: float = Field(600.0, ge=0, le=86_400)
    log_level: str = "INFO"
    log_json: bool = True
    log_calls: Literal["errors", "all"] = Field("errors", description="access-log every call, or failed ones only")

    # images
    max_image_bytes: int = Field(30 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1, description="decompression-bomb guard")
    min_image_side: int = Field(16, ge=1)

    # artifact store: file:///abs/dir (embedded) or s3://bucket[/prefix]
    store_uri: str = "file:///tmp/likeness/store"
    s3_endpoint: str = "127.0.0.1:8333"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    # extra buckets (beyond the store's own) that input URIs may name; comma-separated
    allowed_buckets: str = ""
    # transient S3 failures (connection refused, 5xx) are retried with backoff this long, then UNAVAILABLE
    store_retry_seconds: float = Field(30.0, ge=0)

    # model repository: a folder or a store URI prefix; pods copy models to model_cache_dir
    model_repository: str = "file:///tmp/likeness/models"
    model_cache_dir: str = "/tmp/likeness/model-cache"

    # Bearer token every service's gRPC API requires (and every client built by core.channels
    # sends); empty = off. `auth_exempt` names what stays open: health (Kubernetes probes),
    # reflection (grpcurl), metrics (the Prometheus scrape). The orchestrator's own
    # LIKENESS_ORCHESTRATOR_AUTH_TOKEN, when set, guards its API instead.
    auth_token: SecretStr = SecretStr("")
    auth_exempt: str = Field("health,reflection,metrics", pattern=r"^((health|reflection|metrics)(,|$))*$")

    # tracing (OpenTelemetry, OTLP/gRPC): off by default; the chart turns it on
    tracing_enabled: bool = False
    tracing_endpoint: str = Field("http://127.0.0.1:4317", description="OTLP/gRPC collector (Tempo, Jaeger, ...)")
    tracing_insecure: bool = Field(True, description="plaintext to the collector; false = TLS")
    tracing_sample_ratio: float = Field(0.1, ge=0.0, le=1.0, description="share of new traces sampled")
    tracing_keep_errors: bool = Field(True, description="also export unsampled calls that failed")
    tracing_keep_slower_than_seconds: float = Field(
        0.0, ge=0.0, description="also export unsampled calls slower than this; 0 = off")

    # TLS between services (optional): mounted PEM files
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""

    def exempt(self, what: str) -> bool:
        return what in self.auth_exempt.split(",")

    def resolved_port(self, service: str) -> int:
        return PORTS.get(service, 0) if self.port < 0 else self.port

    def resolved_metrics_port(self, service: str) -> int:
        if self.metrics_port >= 0:
            return self.metrics_port
        grpc_port = self.resolved_port(service)
        return grpc_port + 1000 if grpc_port else 0
