"""Durable job state: submit, lease with heartbeats, events, cancellation, cached work results.

Leasing works on SQLite and PostgreSQL alike: pick a candidate (PostgreSQL: `FOR UPDATE SKIP
LOCKED`, so replicas never wait on each other), then a conditional UPDATE that only succeeds while the
job is still free; a replica whose heartbeat fails has lost the job and stops working on it.
Blocking calls: the servicer and the runner call them through asyncio.to_thread.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer, sessionmaker

from likeness.core import pages
from likeness.core.database import make_engine
from likeness.core.errors import NotFound
from likeness.core.pages import Cursor
from likeness.orchestrator.changes import QUEUE, Changes
from likeness.orchestrator.db import EventRow, JobRow, WorkResultRow, migrate, utcnow

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass
class JobRecord:
    job_id: str
    kind: str
    state: str
    spec: bytes
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    cancel_requested: bool = False
    lease_owner: str | None = None
    progress: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    error: str = ""
    trace_parent: str = ""
    previous_owner: str = ""  # set by lease_next: the replica whose lease this attempt took over

    @classmethod
    def of(cls, row: JobRow, with_spec: bool = True) -> JobRecord:
        return cls(row.job_id, row.kind, row.state, row.spec if with_spec else b"", row.created_at, row.updated_at,
                   row.attempts, bool(row.cancel_requested), row.lease_owner, dict(row.progress or {}), dict(row.summary or {}),
                   dict(row.report or {}), dict(row.manifest or {}), row.error or "", row.trace_parent or "")

    @property
    def trace_id(self) -> str:
        """The trace id inside `trace_parent` (version-traceid-spanid-flags), or ""."""
        parts = self.trace_parent.split("-")
        return parts[1] if len(parts) == 4 else ""


@dataclass
class EventRecord:
    seq: int
    job_id: str
    time: datetime
    type: str
    stage: str
    message: str
    progress: dict
    state: str


class JobStore:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        migrate(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self.changes = Changes()  # wakes this process's Watch streams and job loop after a write

    def close(self) -> None:
        self.engine.dispose()

    # --- API side -------------------------------------------------------------------------
    def submit(self, kind: str, spec: bytes, idempotency_key: str = "", trace_parent: str = "") -> tuple[JobRecord, bool]:
        """Queues a job; with a known idempotency key returns the existing job (created=False)."""
        now = utcnow()
        row = JobRow(job_id=uuid.uuid4().hex[:20], kind=kind, state="QUEUED", spec=spec,
                     idempotency_key=idempotency_key or None, created_at=now, updated_at=now, attempts=0,
                     cancel_requested=0, progress={}, summary={}, report={}, manifest={}, error="",
                     trace_parent=trace_parent[:64])
        try:
            with self.sessions.begin() as s:
                s.add(row)
                s.flush()
                self._event(s, row.job_id, "PROGRESS", "", "queued", {}, "QUEUED")
            self.changes.notify(QUEUE)
            return JobRecord.of(row), True
        except IntegrityError:
            with self.sessions() as s:
                existing = s.scalars(select(JobRow).where(JobRow.idempotency_key == idempotency_key)).first()
                if existing is None:
                    raise
                return JobRecord.of(existing), False

    def get(self, job_id: str) -> JobRecord:
        with self.sessions() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFound("job_id", f"no job '{job_id}'")
            return JobRecord.of(row)

    def list(self, limit: int = 100, kind: str = "", state: str = "", cursor: Cursor | None = None) -> list[JobRecord]:
        """Jobs newest first, after `cursor`, WITHOUT their specs (`spec` is b""): a listing must not
        load what Get returns one at a time."""
        q = (select(JobRow).options(defer(JobRow.spec)).where(pages.after((JobRow.created_at, JobRow.job_id), cursor))
             .order_by(JobRow.created_at.desc(), JobRow.job_id.desc()).limit(limit))
        if kind:
            q = q.where(JobRow.kind == kind)
        if state:
            q = q.where(JobRow.state == state)
        with self.sessions() as s:
            return [JobRecord.of(r, with_spec=False) for r in s.scalars(q)]

    def request_cancel(self, job_id: str) -> JobRecord:
        with self.sessions.begin() as s:
            row = s.get(JobRow, job_id, with_for_update=self.is_postgres)
            if row is None:
                raise NotFound("job_id", f"no job '{job_id}'")
            if row.state == "QUEUED":
                row.state, row.updated_at, row.cancel_requested = "CANCELLED", utcnow(), 1
                self._event(s, job_id, "FINISHED", "", "cancelled before it started", {}, "CANCELLED")
            elif row.state == "RUNNING" and not row.cancel_requested:
                row.cancel_requested, row.updated_at = 1, utcnow()
                self._event(s, job_id, "WARNING", "", "cancel requested", {}, "RUNNING")
            record = JobRecord.of(row)
        self.changes.notify(job_id)
        return record

    def events_after(self, job_id: str, after_seq: int, limit: int = 500) -> list[EventRecord]:
        """Events of one job after its `after_seq`-th. `seq` counts from 1 per job: the event's
        position among the job's events in insertion order (events are never deleted)."""
        q = (select(EventRow).where(EventRow.job_id == job_id).order_by(EventRow.seq)
             .offset(max(0, after_seq)).limit(limit))
        with self.sessions() as s:
            return [EventRecord(after_seq + i + 1, e.job_id, e.time, e.type, e.stage, e.message,
                                dict(e.progress or {}), e.state)
                    for i, e in enumerate(s.scalars(q))]

    def counts(self) -> dict[tuple[str, str], int]:
        with self.sessions() as s:
            rows = s.execute(select(JobRow.kind, JobRow.state, func.count()).group_by(JobRow.kind, JobRow.state))
            return {(k, st): n for k, st, n in rows}

    # --- runner side ----------------------------------------------------------------------
    def lease_next(self, owner: str, lease_seconds: float) -> JobRecord | None:
        """Takes a queued job, or a running one whose lease expired (its owner died)."""
        now = utcnow()
        free = or_(JobRow.state == "QUEUED", and_(JobRow.state == "RUNNING", JobRow.lease_expires_at < now))
        with self.sessions.begin() as s:
            q = select(JobRow.job_id, JobRow.lease_owner).where(free).order_by(JobRow.created_at).limit(1)
            if self.is_postgres:
                q = q.with_for_update(skip_locked=True)
            candidate = s.execute(q).first()
            if candidate is None:
                return None
            job_id, previous = candidate
            taken = s.execute(
                update(JobRow).where(JobRow.job_id == job_id, free)
                .values(state="RUNNING", lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
                        attempts=JobRow.attempts + 1, updated_at=now)).rowcount
            if taken != 1:
                return None
            row = s.get(JobRow, job_id)
            s.refresh(row)
            record = JobRecord.of(row)
            if row.attempts > 1:  # a takeover is a fault the job's record shows, not just a count
                record.previous_owner = previous or ""
                self._event(s, job_id, "WARNING", "", f"takeover: resumed by {owner} (attempt {row.attempts}) after "
                            f"the lease of {previous or 'an unknown replica'} expired", {}, "RUNNING")
            else:
                self._event(s, job_id, "PROGRESS", "", f"started by {owner} (attempt 1)", {}, "RUNNING")
        self.changes.notify(job_id)
        return record

    def heartbeat(self, job_id: str, owner: str, lease_seconds: float, progress: dict | None = None) -> tuple[bool, bool]:
        """Extends the lease; returns (still_owner, cancel_requested)."""
        now = utcnow()
        values = {"lease_expires_at": now + timedelta(seconds=lease_seconds), "updated_at": now}
        if progress is not None:
            values["progress"] = progress
        with self.sessions.begin() as s:
            ok = s.execute(update(JobRow).where(JobRow.job_id == job_id, JobRow.lease_owner == owner,
                                                JobRow.state == "RUNNING").values(**values)).rowcount == 1
            cancel = bool(s.scalar(select(JobRow.cancel_requested).where(JobRow.job_id == job_id)))
        return ok, cancel

    def finish(self, job_id: str, owner: str, state: str, *, summary: dict | None = None, report: dict | None = None,
               manifest: dict | None = None, error: str = "", message: str = "") -> bool:
        with self.sessions.begin() as s:
            values = {"state": state, "updated_at": utcnow(), "lease_expires_at": None, "error": error}
            for name, value in (("summary", summary), ("report", report), ("manifest", manifest)):
                if value is not None:
                    values[name] = value
            ok = s.execute(update(JobRow).where(JobRow.job_id == job_id, JobRow.lease_owner == owner,
                                                JobRow.state == "RUNNING").values(**values)).rowcount == 1
            if ok:
                self._event(s, job_id, "FINISHED", "", message or error or state.lower(), {}, state)
        self.changes.notify(job_id)
        self.changes.notify(QUEUE)  # a slot is free
        return ok

    def add_event(self, job_id: str, type_: str, stage: str = "", message: str = "", progress: dict | None = None,
                  state: str = "RUNNING") -> None:
        with self.sessions.begin() as s:
            self._event(s, job_id, type_, stage, message, progress or {}, state)
        self.changes.notify(job_id)

    def add_events(self, job_id: str, events: list[tuple[str, str, str]], state: str = "RUNNING") -> None:
        """Several (type, stage, message) events in one transaction (one per batch, not per item)."""
        with self.sessions.begin() as s:
            for type_, stage, message in events:
                self._event(s, job_id, type_, stage, message, {}, state)
        self.changes.notify(job_id)

    @staticmethod
    def _event(s: Session, job_id, type_, stage, message, progress, state) -> None:
        s.add(EventRow(job_id=job_id, time=utcnow(), type=type_, stage=stage[:64], message=message,
                       progress=progress, state=state))

    # --- content-addressed results ------------------------------------------------------------
    def get_result(self, work_id: str) -> bytes | None:
        with self.sessions() as s:
            row = s.get(WorkResultRow, work_id)
            return row.result if row else None

    def put_result(self, work_id: str, kind: str, result: bytes) -> None:
        try:
            with self.sessions.begin() as s:
                s.merge(WorkResultRow(work_id=work_id, kind=kind, result=result, created_at=utcnow()))
        except IntegrityError:  # another replica stored the same result first: same content
            pass
