"""The job loop of one orchestrator replica: lease, heartbeat, run the workflow, write the manifest
and the report, finish. A replica that dies leaves its lease to expire; another replica (or this
one restarted) takes the job over and resumes it from the content-addressed results."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket

import sqlalchemy.exc

from likeness.api.v1 import orchestrator_pb2
from likeness.core import errors, metrics, tracing
from likeness.core.faults import Fault
from likeness.core.store import ArtifactStore
from likeness.core.workid import canonical_json
from likeness.orchestrator.changes import QUEUE, wait
from likeness.orchestrator.clients import ServiceClients
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.jobstore import JobRecord, JobStore
from likeness.orchestrator.report import render_report
from likeness.orchestrator.settings import OrchestratorSettings
from likeness.orchestrator.workflows import WORKFLOWS

log = logging.getLogger("likeness.orchestrator.runner")


def output_prefix(job: JobRecord) -> str:
    return f"jobs/{job.job_id}/"


class Runner:
    def __init__(self, settings: OrchestratorSettings, jobs: JobStore, store: ArtifactStore, clients: ServiceClients):
        self.settings = settings
        self.jobs, self.store, self.clients = jobs, store, clients
        self.owner = settings.orchestrator_replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.tasks: dict[str, asyncio.Task] = {}
        self._stopping = asyncio.Event()

    async def run_forever(self) -> None:
        while not self._stopping.is_set():
            queued = self.jobs.changes.listen(QUEUE)  # a Submit or a finished job on this replica wakes the loop
            try:
                await self._refresh_gauges()
                if len(self.tasks) < self.settings.orchestrator_max_running_jobs:
                    job = await asyncio.to_thread(self.jobs.lease_next, self.owner, self.settings.orchestrator_lease_seconds)
                    if job is not None:
                        self.tasks[job.job_id] = asyncio.create_task(self.run_job(job))
                        continue
            except Exception:  # the job store may be restarting: keep polling
                log.exception("lease loop error")
            await wait(queued, self.settings.orchestrator_poll_seconds)

    async def stop(self) -> None:
        """Stops leasing; running jobs are interrupted and their leases released for other replicas."""
        self._stopping.set()
        self.jobs.changes.notify(QUEUE)
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _refresh_gauges(self) -> None:
        counts = await asyncio.to_thread(self.jobs.counts)
        for (kind, state), n in counts.items():
            metrics.JOBS.labels(kind, state).set(n)

    async def _heartbeat(self, ctx: JobContext, work: asyncio.Task) -> None:
        while not work.done():
            await asyncio.sleep(self.settings.orchestrator_heartbeat_seconds)
            try:
                ok, cancel = await asyncio.to_thread(self.jobs.heartbeat, ctx.job_id, self.owner,
                                                     self.settings.orchestrator_lease_seconds)
            except Exception:  # store briefly unreachable: the lease still has time left
                log.warning("heartbeat failed", extra={"job_id": ctx.job_id})
                continue
            if not ok:
                log.warning("lease lost; stopping work on the job", extra={"job_id": ctx.job_id})
                work.cancel()
                return
            ctx.cancel_requested = ctx.cancel_requested or cancel

    async def run_job(self, job: JobRecord) -> None:
        # One span per attempt, under the Submit call's span: a resumed job stays in the same trace.
        with tracing.span_under(f"job {job.kind}", job.trace_parent,
                                {"job.id": job.job_id, "job.kind": job.kind, "job.attempt": job.attempts}):
            await self._run_job(job)

    async def _run_job(self, job: JobRecord) -> None:
        ctx = JobContext(job, self.jobs, self.store, self.clients)
        ctx.collect_faults()  # this task is the job's own: retries and stalls below land in the job
        if job.attempts > 1:  # lease_next wrote the takeover event
            ctx.faults.append(Fault("takeover", f"attempt {job.attempts} by {self.owner} took over from "
                                                f"{job.previous_owner or 'an unknown replica'}"))
        spec = orchestrator_pb2.JobSpec.FromString(job.spec)
        workflow = WORKFLOWS[job.kind]
        work = asyncio.create_task(workflow(ctx, getattr(spec, job.kind)))
        beat = asyncio.create_task(self._heartbeat(ctx, work))
        outcome: Outcome | None = None
        try:
            try:
                outcome = await work
                state, error = ("FAILED", outcome.failure) if outcome.failure else ("SUCCEEDED", "")
                if outcome.failure:
                    tracing.mark_failed(outcome.failure)
            except errors.Cancelled as exc:
                state, error = "CANCELLED", str(exc)
            except errors.LikenessError as exc:
                state, error = "FAILED", str(exc)
                tracing.mark_failed(error)
            except (asyncio.CancelledError, sqlalchemy.exc.OperationalError):
                raise
            except Exception as exc:
                log.exception("job failed", extra={"job_id": job.job_id})
                tracing.mark_failed(f"internal error: {type(exc).__name__}")
                state, error = "FAILED", f"internal error: {type(exc).__name__}: {exc}"
            if outcome is None:
                outcome = self._partial(ctx)
            if state != "CANCELLED":
                await self._note_reuse(ctx, job)
            outputs: dict = {}
            try:  # every job, failed or not, leaves its manifest and report with what it has
                outputs = dict(zip(("report", "manifest"), await self._write_outputs(ctx, job, outcome, state,
                                                                                  error or outcome.note),
                                   strict=True))
            except (asyncio.CancelledError, sqlalchemy.exc.OperationalError):
                raise
            except Exception as exc:
                log.exception("writing the job's outputs failed", extra={"job_id": job.job_id})
                if state == "SUCCEEDED":
                    state, error = "FAILED", f"writing the report and manifest failed: {type(exc).__name__}: {exc}"
            await ctx.flush_faults()
            await asyncio.to_thread(self.jobs.finish, job.job_id, self.owner, state, error=error,
                                    summary=self._summary(ctx, outcome), **outputs)
        except asyncio.CancelledError:
            # Shutdown or lost lease: leave the job RUNNING; its lease expires and it is resumed.
            log.info("job interrupted", extra={"job_id": job.job_id})
        except sqlalchemy.exc.OperationalError:
            # The job store is unreachable (database restart, failover): the job must not be
            # marked FAILED for it (that write could even succeed a moment later). Left RUNNING
            # without heartbeats, its lease expires and it is resumed, finished work reused.
            log.warning("job store unreachable; the job resumes when its lease expires", extra={"job_id": job.job_id},
                        exc_info=True)
        except Exception:  # finishing failed: the job stays RUNNING and is resumed when its lease expires
            log.exception("finishing the job failed", extra={"job_id": job.job_id})
        finally:
            beat.cancel()
            self.tasks.pop(job.job_id, None)

    @staticmethod
    async def _note_reuse(ctx: JobContext, job: JobRecord) -> None:
        if job.attempts > 1:
            ctx.fault("takeover", f"attempt {job.attempts} reused {ctx.reused} of {ctx.reused + ctx.computed} "
                                  "units of work finished by earlier attempts")

    @staticmethod
    def _partial(ctx: JobContext) -> Outcome:
        """What a job that stopped early has: the workflow's partial results when it registered them."""
        if ctx.partial is not None:
            try:
                return ctx.partial()
            except Exception:  # the partial view must never hide the job's own error
                log.exception("partial outcome failed", extra={"job_id": ctx.job_id})
        return Outcome({}, {}, {"sections": []})

    @staticmethod
    def _summary(ctx: JobContext, outcome: Outcome | None) -> dict:
        summary = {k: str(v) for k, v in (outcome.summary if outcome else {}).items()}
        summary.update({f"seconds_{k}": f"{v:.3f}" for k, v in ctx.timings.items()})
        if outcome is not None and outcome.note:
            summary["note"] = outcome.note
        stand_ins = ctx.models.warnings()
        if stand_ins:
            summary["stand_in_models"] = "; ".join(stand_ins)
        summary["work_reused"] = str(ctx.reused)
        summary["work_computed"] = str(ctx.computed)
        if ctx.warnings:
            summary["warnings"] = str(len(ctx.warnings))
        for fault in ctx.faults:
            summary[f"faults_{fault.kind}"] = str(int(summary.get(f"faults_{fault.kind}", "0")) + 1)
        return summary

    async def _write_outputs(self, ctx: JobContext, job: JobRecord, outcome: Outcome, state: str,
                             reason: str) -> tuple[dict, dict]:
        prefix = output_prefix(job)
        head = {"kind": job.kind, "outcome": {"state": state, "reason": reason}, "models": ctx.models.as_list()}
        manifest_body = canonical_json({**outcome.manifest, **head})
        manifest = await asyncio.to_thread(self.store.put, prefix + "manifest.json", manifest_body, "application/json")
        rows = [[f.kind, f.message] for f in ctx.faults]
        section = ({"type": "table", "title": "Faults survived", "columns": ["kind", "detail"], "rows": rows} if rows
                   else {"type": "text", "title": "Faults survived", "body": "none: no retried call, stalled store "
                         "call or takeover during this job"})
        shown = dataclasses.replace(outcome, report={**outcome.report,
                                                     "sections": [*outcome.report.get("sections", []), section]})
        html = await asyncio.to_thread(render_report, job, shown, ctx.timings, ctx.warnings, self.store,
                                       state=state, reason=reason, models=ctx.models)
        report = await asyncio.to_thread(self.store.put, prefix + "report.html", html.encode(), "text/html")
        as_dict = lambda o: {"uri": o.uri, "sha256": o.sha256, "size_bytes": o.size, "media_type": o.media_type}  # noqa: E731
        log.info("job outputs", extra={"job_id": job.job_id, "report": report.uri, "manifest": manifest.uri,
                                       "timings": json.dumps({k: round(v, 3) for k, v in ctx.timings.items()})})
        return as_dict(report), as_dict(manifest)
