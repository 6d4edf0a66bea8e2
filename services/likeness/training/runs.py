"""The training service's domain API: start, watch, get, list, cancel and compare runs.

`start` does every check before a run is queued (spec limits, base model, resume source, the
dataset with its captions and images), so bad input fails the StartRun call itself with a clear
message and no training work; per-image problems that do not stop a run (a corrupt image, an
image without a caption under the SKIP policy) are recorded in the run's `skipped` list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from likeness.core.errors import FailedPrecondition, InvalidArgument
from likeness.core.pages import Cursor
from likeness.training.compare import Comparison, compare_runs
from likeness.training.dataset import Dataset, assign_buckets, load_dataset, plan_epoch
from likeness.training.registry import FINAL_STATES, QUEUED, RunRecord
from likeness.training.runner import RunContext
from likeness.training.spec import RunSpec, resolve, validate_static
from likeness.training.trainer import spec_digest

log = logging.getLogger("likeness.training.runs")


@dataclass(frozen=True)
class WatchEvent:
    run_id: str
    state: str
    step: int
    total_steps: int
    loss: float
    eta_seconds: float  # NaN until a step has been timed
    checkpoint: object | None  # CheckpointRecord written since the previous event
    message: str


def new_run_id() -> str:
    """Sortable by creation time, unique across replicas: `20261122-083012-5f3a9c1e`."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)


def planned_steps(spec: RunSpec, dataset: Dataset) -> int:
    buckets = assign_buckets(dataset.items, spec.resolution, spec.aspect_buckets)
    per_epoch = len(plan_epoch(buckets, batch_size=spec.batch_size, accumulation=spec.gradient_accumulation,
                               seed=spec.seed, epoch=0))
    return spec.max_steps or spec.epochs * per_epoch


class TrainingRuns:
    def __init__(self, ctx: RunContext, executors: dict, default_executor: str, *, watch_interval: float = 0.25):
        self.ctx, self.executors = ctx, executors
        self.default_executor, self.watch_interval = default_executor, watch_interval

    @property
    def registry(self):
        return self.ctx.registry

    def start(self, spec: RunSpec, resume_from: str = "") -> RunRecord:
        validate_static(spec)
        run_id = new_run_id()
        model = self.ctx.models.resolve(spec.base_model)
        resolved = resolve(spec, native_resolution=model.native_resolution, tiny_model=model.tiny,
                           default_executor=self.default_executor, run_id=run_id)
        if resolved.executor not in self.executors:
            raise FailedPrecondition("spec.executor", f"executor {resolved.executor!r} is not enabled in this "
                                     f"service (enabled: {', '.join(sorted(self.executors))})")
        check = getattr(self.executors[resolved.executor], "check", None)
        if check is not None:  # what this executor cannot honour is refused before the run exists
            check(resolved)
        if resume_from:
            self._check_resume_source(resume_from, resolved)
        dataset = load_dataset(self.ctx.store, resolved.dataset_uri, policy=resolved.missing_caption_policy,
                               limits=self.ctx.limits)
        total_steps = planned_steps(resolved, dataset)
        if resume_from:
            saved_step = self.registry.get(resume_from, with_loss=False).latest_state[0]
            if saved_step >= total_steps:
                raise FailedPrecondition("resume_from_run_id", f"run {resume_from} already trained all "
                                         f"{total_steps} steps; there is nothing to resume")
        run = self.registry.create_run(
            run_id, resolved.to_dict(), executor=resolved.executor, base_model_digest=model.digest,
            resume_from=resume_from, skipped=list(dataset.skipped),
            dataset={"dataset_digest": dataset.dataset_digest, "captions_digest": dataset.captions_digest,
                     "image_count": len(dataset.items), "total_steps": total_steps,
                     "info": dataset.info()})
        executor = self.executors[resolved.executor]
        try:
            if resolved.executor == "in_process":
                executor.submit(run, dataset)
            else:
                executor.submit(run)
        except Exception as exc:
            self.registry.finish(run_id, "failed", f"could not start: {exc}")
            raise
        log.info("run started", extra={"run_id": run_id, "executor": resolved.executor,
                                       "images": len(dataset.items), "skipped": len(dataset.skipped)})
        return self.registry.get(run_id)

    def _check_resume_source(self, parent_id: str, spec: RunSpec) -> None:
        try:
            parent = self.registry.get(parent_id, with_loss=False)
        except Exception as exc:
            raise InvalidArgument("resume_from_run_id", f"no run {parent_id!r}") from exc
        if parent.state not in FINAL_STATES:
            raise FailedPrecondition("resume_from_run_id", f"run {parent_id} is still {parent.state}; cancel it first")
        if parent.latest_state is None:
            raise FailedPrecondition("resume_from_run_id", f"run {parent_id} saved no training state to resume from")
        parent_spec = RunSpec.from_dict(parent.spec)
        if spec_digest(parent_spec) != spec_digest(spec):
            fields = [f.name for f in dataclasses.fields(RunSpec)
                      if getattr(parent_spec, f.name) != getattr(spec, f.name)
                      and f.name not in ("name", "output_prefix", "defaulted", "executor", "kubernetes",
                                         "sample_prompts", "sample_seeds", "sample_steps", "dataset_uri",
                                         "checkpoint_every_epochs", "missing_caption_policy", "precision")]
            raise FailedPrecondition("resume_from_run_id", f"an exact resume needs the parent's training settings; "
                                     f"these differ: {', '.join('spec.' + f for f in fields)}")

    def get(self, run_id: str) -> RunRecord:
        return self.registry.get(_check_id(run_id))

    def list(self, limit: int = 100, state: str = "", cursor: Cursor | None = None) -> list[RunRecord]:
        """Runs newest first after `cursor`, without checkpoints, loss or skipped items."""
        return self.registry.list(limit, state, cursor)

    def cancel(self, run_id: str) -> RunRecord:
        run = self.registry.request_cancel(_check_id(run_id))
        executor = self.executors.get(run.executor)
        if executor is not None:
            executor.cancel(run)
        return run

    def compare(self, run_ids: list[str]) -> Comparison:
        if not 2 <= len(run_ids) <= 20:
            raise InvalidArgument("run_ids", f"{len(run_ids)} runs given; compare 2 to 20")
        return compare_runs([self.registry.get(_check_id(r, f"run_ids[{i}]"), with_loss=False)
                             for i, r in enumerate(run_ids)])

    async def watch(self, run_id: str) -> AsyncIterator[WatchEvent]:
        """An event whenever the step, state or checkpoints change, until the run ends. Polls the
        registry, so it works for every executor and from every replica."""
        run_id = _check_id(run_id)
        seen_step, seen_state, seen_ckpts = -1, "", -1
        first_step_at: tuple[float, int] | None = None
        while True:
            state, step, total, loss, _, n_ckpts, error = await asyncio.to_thread(self.registry.progress, run_id)
            if state == QUEUED and seen_state == QUEUED:
                await asyncio.sleep(self.watch_interval)
                continue
            if (step, state, n_ckpts) != (seen_step, seen_state, seen_ckpts):
                checkpoint = None
                if n_ckpts != seen_ckpts and n_ckpts > 0 and seen_ckpts != -1:
                    run = await asyncio.to_thread(self.registry.get, run_id, with_loss=False)
                    checkpoint = run.checkpoints[-1]
                if step > 0 and first_step_at is None:
                    first_step_at = (time.monotonic(), step)
                eta = math.nan
                if first_step_at and step > first_step_at[1]:
                    rate = (step - first_step_at[1]) / (time.monotonic() - first_step_at[0])
                    eta = (total - step) / rate
                elif state in FINAL_STATES:
                    eta = 0.0
                yield WatchEvent(run_id, state, step, total, loss, eta, checkpoint, error)
                seen_step, seen_state, seen_ckpts = step, state, n_ckpts
            if state in FINAL_STATES:
                return
            await asyncio.sleep(self.watch_interval)


def _check_id(run_id: str, field: str = "run_id") -> str:
    if not run_id or len(run_id) > 40:
        raise InvalidArgument(field, "is required (at most 40 characters)" if not run_id
                              else f"has {len(run_id)} characters, over the limit of 40")
    return run_id
