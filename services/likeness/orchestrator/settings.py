"""Orchestrator settings (`LIKENESS_ORCHESTRATOR_*`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from likeness.core.settings import CommonSettings


class OrchestratorSettings(CommonSettings):
    # Job store: SQLite file embedded, PostgreSQL in a cluster (postgresql+psycopg://...).
    orchestrator_database_url: str = "sqlite:////tmp/likeness/orchestrator.db"
    # Service addresses: host:port, a comma-separated list of replicas, or dns:///headless-service:port.
    orchestrator_detection_address: str = "127.0.0.1:50051"
    orchestrator_generation_address: str = "127.0.0.1:50052"
    orchestrator_embedding_address: str = "127.0.0.1:50053"
    orchestrator_restoration_address: str = "127.0.0.1:50054"
    orchestrator_training_address: str = "127.0.0.1:50055"
    # Leases: a job whose owner stopped heartbeating for `lease_seconds` is taken over.
    orchestrator_lease_seconds: float = Field(15.0, gt=0)
    orchestrator_heartbeat_seconds: float = Field(3.0, gt=0)
    orchestrator_poll_seconds: float = Field(0.5, gt=0)
    orchestrator_max_running_jobs: int = Field(2, ge=1, le=64)
    # Concurrent calls per service from one replica (the services batch and queue the rest).
    orchestrator_service_concurrency: int = Field(4, ge=1, le=256)
    # A call that keeps failing with UNAVAILABLE / RESOURCE_EXHAUSTED is retried this long.
    orchestrator_retry_seconds: float = Field(180.0, ge=0)
    orchestrator_call_timeout_seconds: float = Field(600.0, gt=0)
    # Bearer token for the external API; empty disables authentication (embedded use only).
    orchestrator_auth_token: SecretStr = SecretStr("")
    # Identity of this replica in leases (defaults to host name + pid).
    orchestrator_replica_id: str = ""
    # Run the job loop in this process (off for an API-only replica).
    orchestrator_run_jobs: bool = True
