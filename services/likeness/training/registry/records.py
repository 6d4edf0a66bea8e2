"""What the registry hands out: plain dataclasses, detached from the database session."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class ArtifactRef:
    uri: str
    sha256: str
    size: int
    media_type: str

    def to_dict(self) -> dict:
        return {"uri": self.uri, "sha256": self.sha256, "size": self.size, "media_type": self.media_type}

    @classmethod
    def from_dict(cls, d: dict | None) -> ArtifactRef | None:
        return None if not d else cls(d["uri"], d["sha256"], int(d["size"]), d["media_type"])

    @classmethod
    def of(cls, stored) -> ArtifactRef:
        """From a core.store.StoredObject."""
        return cls(stored.uri, stored.sha256, stored.size, stored.media_type)


@dataclass(frozen=True)
class CheckpointRecord:
    epoch: int
    step: int
    loss: float  # NaN when no step ran in the epoch
    diffusers_weights: ArtifactRef
    kohya_weights: ArtifactRef
    state: ArtifactRef
    sample_grid: ArtifactRef | None
    clip_score: float = math.nan  # NaN: not measured (evaluation["notes"] says why)
    identity_similarity: float = math.nan
    evaluation: dict = field(default_factory=dict)
    best: bool = False
    seconds: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LossPoint:
    step: int
    loss: float
    lr: float


@dataclass(frozen=True)
class SkippedItem:
    uri: str
    reason: str


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    name: str
    state: str
    spec: dict
    base_model: str
    base_model_digest: str
    executor: str
    external_id: str
    resume_from: str
    dataset_digest: str
    captions_digest: str
    image_count: int
    dataset_info: dict
    step: int
    total_steps: int
    last_loss: float
    best_epoch: int
    error: str
    cancel_requested: bool
    resume_state: tuple[int, ArtifactRef] | None  # (step, state) written when cancelled mid-epoch
    timings: dict
    notes: list
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str = ""
    heartbeat_at: datetime | None = None
    checkpoints: list[CheckpointRecord] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    loss: list[LossPoint] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def best_checkpoint(self) -> CheckpointRecord | None:
        return next((c for c in self.checkpoints if c.best), None)

    @property
    def latest_state(self) -> tuple[int, ArtifactRef] | None:
        """(step, training-state artifact) to resume from: the newer of the last checkpoint's
        state and the state written when the run was cancelled mid-epoch."""
        options = [(c.step, c.state) for c in self.checkpoints]
        if self.resume_state is not None:
            options.append(self.resume_state)
        return max(options, key=lambda o: o[0]) if options else None
