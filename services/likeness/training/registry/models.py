"""Tables of the run registry (SQLAlchemy 2 typed ORM). The schema is owned by the Alembic
migrations in `migrations/versions/`; a test checks the two agree.

Spec and artifacts are JSON columns (portable across SQLite and PostgreSQL) because the registry
compares them field by field; the few columns a query filters or sorts on are real columns.
Scores that were not measured are NULL (shown as NaN), never 0.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict] = mapped_column(JSON)  # resolved RunSpec, every default filled in
    base_model: Mapped[str] = mapped_column(String(200))
    base_model_digest: Mapped[str] = mapped_column(String(80), default="")
    executor: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(253), default="")  # Kubernetes Job name
    # process training the run (in-process executor) and its last sign of life (migration 0002)
    owner: Mapped[str] = mapped_column(String(200), default="", server_default="")
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resume_from: Mapped[str] = mapped_column(String(40), default="")
    dataset_digest: Mapped[str] = mapped_column(String(64), default="")
    captions_digest: Mapped[str] = mapped_column(String(64), default="")
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    dataset_info: Mapped[dict] = mapped_column(JSON, default=dict)  # buckets, caption policy counts
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    total_steps: Mapped[int] = mapped_column(BigInteger, default=0)
    last_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_epoch: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    resume_state: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # state written on cancel
    timings: Mapped[dict] = mapped_column(JSON, default=dict)  # seconds per phase
    notes: Mapped[list] = mapped_column(JSON, default=list)  # e.g. why a score is NaN
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    checkpoints: Mapped[list[CheckpointRow]] = relationship(
        back_populates="run", order_by="CheckpointRow.step", cascade="all, delete-orphan")
    skipped: Mapped[list[SkippedRow]] = relationship(cascade="all, delete-orphan", order_by="SkippedRow.id")


class _OfRun:
    """A row that belongs to one run: its own serial id, and the run's, deleted with the run (first
    in the table, as the migrations create them)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, sort_order=-2)
    run_id: Mapped[str] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), index=True,
                                        sort_order=-1)


class CheckpointRow(_OfRun, Base):
    __tablename__ = "training_checkpoints"

    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(BigInteger)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    # {"uri", "sha256", "size", "media_type"} each
    diffusers_weights: Mapped[dict] = mapped_column(JSON)
    kohya_weights: Mapped[dict] = mapped_column(JSON)
    state: Mapped[dict] = mapped_column(JSON)
    sample_grid: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    clip_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    identity_similarity: Mapped[float | None] = mapped_column(Float, nullable=True)
    evaluation: Mapped[dict] = mapped_column(JSON, default=dict)  # per-sample scores, notes
    best: Mapped[bool] = mapped_column(Boolean, default=False)
    seconds: Mapped[dict] = mapped_column(JSON, default=dict)  # save / sample / evaluate
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    run: Mapped[RunRow] = relationship(back_populates="checkpoints")


class LossRow(Base):
    __tablename__ = "training_loss"

    run_id: Mapped[str] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    loss: Mapped[float] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float)


class SkippedRow(_OfRun, Base):
    __tablename__ = "training_skipped"

    uri: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
