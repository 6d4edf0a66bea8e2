"""The run registry: every run's resolved spec, dataset digests, loss curve, checkpoints with their
artifacts and evaluation, state and timings. SQLite (one file, embedded) or PostgreSQL (cluster).

Blocking by design (SQLAlchemy sessions); the servicer calls it through `asyncio.to_thread`. The
training loop writes through the same class, from a worker thread or from a Kubernetes Job pod,
so the registry, not process memory, is the single source of truth that WatchRun polls.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import noload, selectinload, sessionmaker

from likeness.core import database, pages
from likeness.core.errors import FailedPrecondition, InvalidArgument, NotFound
from likeness.core.pages import Cursor
from likeness.training.registry.models import CheckpointRow, LossRow, RunRow, SkippedRow
from likeness.training.registry.records import (
    CANCELLED,
    FINAL_STATES,
    QUEUED,
    RUNNING,
    STATES,
    ArtifactRef,
    CheckpointRecord,
    LossPoint,
    RunRecord,
    SkippedItem,
)

MIGRATIONS = Path(__file__).parent / "migrations"
# Arbitrary constant key of the PostgreSQL advisory lock that serialises migrations when several
# replicas start at once.
_MIGRATION_LOCK = 7_420_260_001


def now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _null(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def migrate(engine: Engine) -> None:
    """Upgrades the schema to the newest migration; safe to call from many replicas at once."""
    database.migrate(engine, MIGRATIONS, _MIGRATION_LOCK)


class RunRegistry:
    def __init__(self, url: str, *, migrate_schema: bool = True):
        self.url = url
        self.engine = database.make_engine(url)
        if migrate_schema:
            migrate(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    # ---- writes -----------------------------------------------------------------------------

    def create_run(self, run_id: str, spec: dict, *, executor: str, base_model_digest: str = "",
                   resume_from: str = "", dataset: dict | None = None,
                   skipped: list[SkippedItem] = ()) -> RunRecord:
        dataset = dataset or {}
        t = now()
        with self._session.begin() as s:
            s.add(RunRow(
                id=run_id, name=spec.get("name") or run_id, state=QUEUED, spec=spec,
                base_model=spec["base_model"], base_model_digest=base_model_digest, executor=executor,
                external_id="", resume_from=resume_from,
                dataset_digest=dataset.get("dataset_digest", ""),
                captions_digest=dataset.get("captions_digest", ""),
                image_count=int(dataset.get("image_count", 0)), dataset_info=dataset.get("info", {}),
                step=0, total_steps=int(dataset.get("total_steps", 0)), last_loss=None, best_epoch=0,
                error="", cancel_requested=False, resume_state=None, timings={}, notes=[],
                created_at=t, started_at=None, finished_at=None, updated_at=t,
                skipped=[SkippedRow(uri=i.uri, reason=i.reason) for i in skipped]))
        return self.get(run_id)

    def _update(self, run_id: str, **values) -> None:
        with self._session.begin() as s:
            n = s.execute(update(RunRow).where(RunRow.id == run_id).values(updated_at=now(), **values)).rowcount
        if n == 0:
            raise NotFound("run_id", f"no run {run_id!r}")

    def claim(self, run_id: str, owner: str, *, stale_before: datetime | None = None) -> bool:
        """Makes `owner` the run's trainer if it is unfinished and has no live owner: never owned,
        or no heartbeat since `stale_before` (None: take it whatever its heartbeat). Atomic, so
        of several replicas trying at once exactly one wins."""
        q = update(RunRow).where(RunRow.id == run_id, RunRow.state.in_((QUEUED, RUNNING)))
        if stale_before is not None:
            q = q.where((RunRow.owner == "") | RunRow.heartbeat_at.is_(None) | (RunRow.heartbeat_at < stale_before))
        with self._session.begin() as s:
            n = s.execute(q.values(owner=owner, heartbeat_at=now(), updated_at=now())).rowcount
        return n == 1

    def release(self, run_id: str) -> None:
        """Leaves a RUNNING run without an owner (its process is shutting down): the next
        process to look adopts it and resumes from its saved state."""
        self._update(run_id, owner="", heartbeat_at=None)

    def heartbeat(self, run_ids: list[str], owner: str) -> None:
        if run_ids:
            with self._session.begin() as s:
                s.execute(update(RunRow).where(RunRow.id.in_(run_ids), RunRow.owner == owner)
                          .values(heartbeat_at=now()))

    def set_external_id(self, run_id: str, external_id: str) -> None:
        self._update(run_id, external_id=external_id)

    def mark_running(self, run_id: str, *, total_steps: int, step: int = 0) -> bool:
        """QUEUED (or RUNNING: a retried Job pod) -> RUNNING; False when the run was cancelled
        or ended meanwhile, so the caller does not train it."""
        with self._session.begin() as s:
            n = s.execute(update(RunRow).where(RunRow.id == run_id, RunRow.state.in_((QUEUED, RUNNING)),
                                               RunRow.cancel_requested.is_(False))
                          .values(state=RUNNING, started_at=func.coalesce(RunRow.started_at, now()),
                                  total_steps=total_steps, step=step,
                                  updated_at=now())).rowcount
        return n == 1

    def record_step(self, run_id: str, step: int, loss: float, lr: float) -> None:
        """One optimizer step: a loss point and the run's progress, in one transaction. A resumed
        run re-records steps it shares with its parent in its own curve (merge on conflict)."""
        with self._session.begin() as s:
            s.merge(LossRow(run_id=run_id, step=step, loss=float(loss), lr=float(lr)))
            s.execute(update(RunRow).where(RunRow.id == run_id)
                      .values(step=step, last_loss=_null(loss), updated_at=now()))

    def add_checkpoint(self, run_id: str, ckpt: CheckpointRecord) -> None:
        with self._session.begin() as s:
            s.add(CheckpointRow(
                run_id=run_id, epoch=ckpt.epoch, step=ckpt.step, loss=_null(ckpt.loss),
                diffusers_weights=ckpt.diffusers_weights.to_dict(), kohya_weights=ckpt.kohya_weights.to_dict(),
                state=ckpt.state.to_dict(),
                sample_grid=ckpt.sample_grid.to_dict() if ckpt.sample_grid else None,
                clip_score=_null(ckpt.clip_score), identity_similarity=_null(ckpt.identity_similarity),
                evaluation=ckpt.evaluation, best=False, seconds=ckpt.seconds, created_at=now()))

    def set_best(self, run_id: str, epoch: int) -> None:
        with self._session.begin() as s:
            s.execute(update(CheckpointRow).where(CheckpointRow.run_id == run_id)
                      .values(best=CheckpointRow.epoch == epoch))
            s.execute(update(RunRow).where(RunRow.id == run_id).values(best_epoch=epoch, updated_at=now()))

    def set_resume_state(self, run_id: str, step: int, state: ArtifactRef) -> None:
        self._update(run_id, resume_state={**state.to_dict(), "step": step})

    def add_timings(self, run_id: str, **seconds: float) -> None:
        with self._session.begin() as s:
            row = s.get(RunRow, run_id, with_for_update=True)
            merged = dict(row.timings or {})
            for k, v in seconds.items():
                merged[k] = round(merged.get(k, 0.0) + float(v), 4)
            row.timings = merged

    def add_note(self, run_id: str, note: str) -> None:
        with self._session.begin() as s:
            row = s.get(RunRow, run_id, with_for_update=True)
            if note not in (row.notes or []):
                row.notes = [*(row.notes or []), note]

    def finish(self, run_id: str, state: str, error: str = "") -> None:
        if state not in FINAL_STATES:
            raise ValueError(f"{state} is not a final state")
        self._update(run_id, state=state, error=error[:4000], finished_at=now())

    def request_cancel(self, run_id: str) -> RunRecord:
        """A queued run is cancelled at once; a running one stops at its next step."""
        run = self.get(run_id, with_loss=False)
        if run.finished:
            raise FailedPrecondition("run_id", f"run {run_id} already ended ({run.state})")
        self._update(run_id, cancel_requested=True)
        if run.state == QUEUED:
            with self._session.begin() as s:
                s.execute(update(RunRow).where(RunRow.id == run_id, RunRow.state == QUEUED)
                          .values(state=CANCELLED, finished_at=now(), updated_at=now()))
        return self.get(run_id)

    def cancel_requested(self, run_id: str) -> bool:
        with self._session() as s:
            return bool(s.scalar(select(RunRow.cancel_requested).where(RunRow.id == run_id)))

    # ---- reads ------------------------------------------------------------------------------

    def get(self, run_id: str, *, with_loss: bool = True) -> RunRecord:
        with self._session() as s:
            row = s.scalar(select(RunRow).where(RunRow.id == run_id)
                           .options(selectinload(RunRow.checkpoints), selectinload(RunRow.skipped)))
            if row is None:
                raise NotFound("run_id", f"no run {run_id!r}")
            loss = []
            if with_loss:
                loss = [LossPoint(r.step, r.loss, r.lr) for r in s.scalars(
                    select(LossRow).where(LossRow.run_id == run_id).order_by(LossRow.step))]
            return _record(row, loss)

    def progress(self, run_id: str) -> tuple[str, int, int, float, datetime | None, int, str]:
        """Cheap poll for WatchRun: (state, step, total_steps, last_loss, started_at,
        checkpoint count, error)."""
        with self._session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise NotFound("run_id", f"no run {run_id!r}")
            n = len(row.checkpoints)
            return (row.state, row.step, row.total_steps, _nan(row.last_loss), _utc(row.started_at), n,
                    row.error)

    def list(self, limit: int = 100, state: str = "", cursor: Cursor | None = None) -> list[RunRecord]:
        """Runs newest first after `cursor`; checkpoints and skipped items are not loaded (empty)."""
        if state and state not in STATES:
            raise InvalidArgument("state", f"{state!r} is not one of {STATES}")
        with self._session() as s:
            q = select(RunRow).options(noload(RunRow.checkpoints), noload(RunRow.skipped))
            if state:
                q = q.where(RunRow.state == state)
            q = q.where(pages.after((RunRow.created_at, RunRow.id), cursor))
            rows = s.scalars(q.order_by(RunRow.created_at.desc(), RunRow.id.desc()).limit(limit)).all()
            return [_record(r, []) for r in rows]

    def unfinished(self, executor: str) -> list[RunRecord]:
        """Runs of `executor` that a dead process left QUEUED or RUNNING (resumed on start-up)."""
        with self._session() as s:
            rows = s.scalars(select(RunRow).where(RunRow.executor == executor,
                                                  RunRow.state.in_((QUEUED, RUNNING)))
                             .options(selectinload(RunRow.checkpoints), selectinload(RunRow.skipped))
                             .order_by(RunRow.created_at)).all()
            return [_record(r, []) for r in rows]


def _record(row: RunRow, loss: list[LossPoint]) -> RunRecord:
    resume = None
    if row.resume_state:
        resume = (int(row.resume_state["step"]), ArtifactRef.from_dict(row.resume_state))
    return RunRecord(
        run_id=row.id, name=row.name, state=row.state, spec=row.spec, base_model=row.base_model,
        base_model_digest=row.base_model_digest, executor=row.executor, external_id=row.external_id,
        resume_from=row.resume_from, dataset_digest=row.dataset_digest, captions_digest=row.captions_digest,
        image_count=row.image_count, dataset_info=row.dataset_info or {}, step=row.step,
        total_steps=row.total_steps, last_loss=_nan(row.last_loss), best_epoch=row.best_epoch,
        error=row.error, cancel_requested=row.cancel_requested, resume_state=resume, owner=row.owner,
        heartbeat_at=_utc(row.heartbeat_at),
        timings=row.timings or {}, notes=list(row.notes or []), created_at=_utc(row.created_at),
        started_at=_utc(row.started_at), finished_at=_utc(row.finished_at),
        checkpoints=[_checkpoint(c) for c in row.checkpoints],
        skipped=[SkippedItem(k.uri, k.reason) for k in row.skipped], loss=loss)


def _checkpoint(c: CheckpointRow) -> CheckpointRecord:
    return CheckpointRecord(
        epoch=c.epoch, step=c.step, loss=_nan(c.loss),
        diffusers_weights=ArtifactRef.from_dict(c.diffusers_weights),
        kohya_weights=ArtifactRef.from_dict(c.kohya_weights), state=ArtifactRef.from_dict(c.state),
        sample_grid=ArtifactRef.from_dict(c.sample_grid), clip_score=_nan(c.clip_score),
        identity_similarity=_nan(c.identity_similarity), evaluation=c.evaluation or {}, best=c.best,
        seconds=c.seconds or {})

