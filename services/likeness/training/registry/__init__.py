"""Run registry: SQLAlchemy tables, Alembic migrations (run on start-up) and the RunRegistry API."""

from likeness.training.registry.records import (
    CANCELLED,
    FAILED,
    FINAL_STATES,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    ArtifactRef,
    CheckpointRecord,
    LossPoint,
    RunRecord,
    SkippedItem,
)
from likeness.training.registry.store import RunRegistry, migrate

__all__ = ["CANCELLED", "FAILED", "FINAL_STATES", "QUEUED", "RUNNING", "SUCCEEDED", "ArtifactRef",
           "CheckpointRecord", "LossPoint", "RunRecord", "RunRegistry", "SkippedItem", "migrate"]
