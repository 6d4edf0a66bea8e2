"""Protobuf views of the orchestrator's job store records."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from likeness.api.v1 import common_pb2, orchestrator_pb2
from likeness.orchestrator import specs
from likeness.orchestrator.jobstore import EventRecord, JobRecord

KIND_ENUM = {k: orchestrator_pb2.JobKind.Value(f"JOB_KIND_{k.upper()}") for k in specs.KINDS}
KIND_NAME = {v: k for k, v in KIND_ENUM.items()}
SUMMARY_ERROR_CHARS = 1000


def _ts(dt) -> Timestamp:
    ts = Timestamp()
    if dt is not None:
        ts.FromDatetime(dt)
    return ts


def _artifact(d: dict) -> common_pb2.Artifact:
    return common_pb2.Artifact(**d) if d else common_pb2.Artifact()


def job_pb(job: JobRecord) -> orchestrator_pb2.Job:
    p = job.progress or {}
    return orchestrator_pb2.Job(
        job_id=job.job_id, kind=KIND_ENUM[job.kind], state=orchestrator_pb2.JobState.Value(f"JOB_STATE_{job.state}"),
        spec=orchestrator_pb2.JobSpec.FromString(job.spec),
        progress=common_pb2.Progress(stage=p.get("stage", ""), done=p.get("done", 0), total=p.get("total", 0),
                                     message=p.get("message", "")),
        report=_artifact(job.report), manifest=_artifact(job.manifest), summary=job.summary, error=job.error,
        attempts=job.attempts, created_at=_ts(job.created_at), updated_at=_ts(job.updated_at), trace_id=job.trace_id)


def job_summary_pb(job: JobRecord) -> orchestrator_pb2.JobSummary:
    p = job.progress or {}
    return orchestrator_pb2.JobSummary(
        job_id=job.job_id, kind=KIND_ENUM[job.kind], state=orchestrator_pb2.JobState.Value(f"JOB_STATE_{job.state}"),
        progress=common_pb2.Progress(stage=p.get("stage", ""), done=p.get("done", 0), total=p.get("total", 0),
                                     message=p.get("message", "")[:SUMMARY_ERROR_CHARS]),
        report=_artifact(job.report), manifest=_artifact(job.manifest), summary=job.summary,
        error=job.error[:SUMMARY_ERROR_CHARS], attempts=job.attempts, created_at=_ts(job.created_at),
        updated_at=_ts(job.updated_at), trace_id=job.trace_id)


def event_pb(e: EventRecord, trace_id: str = "") -> orchestrator_pb2.WatchResponse:
    p = e.progress or {}
    return orchestrator_pb2.WatchResponse(
        job_id=e.job_id, seq=e.seq, time=_ts(e.time), type=orchestrator_pb2.EventType.Value(f"EVENT_TYPE_{e.type}"),
        stage=e.stage, message=e.message, state=orchestrator_pb2.JobState.Value(f"JOB_STATE_{e.state}"),
        progress=common_pb2.Progress(stage=p.get("stage", ""), done=p.get("done", 0), total=p.get("total", 0)),
        trace_id=trace_id)
