"""Executes one registered run end to end, wherever it runs (service thread or Kubernetes Job pod).

    load model + dataset -> build trainer -> restore state (own, else the parent run's)
    -> train, recording every step -> at each checkpoint epoch: LoRA in diffusers and kohya
    format + full state to the store, sample grid, evaluation, best-checkpoint choice
    -> SUCCEEDED, or CANCELLED (state saved at the stop step), or FAILED with the reason.

A run restarted after its process died (a Job retry) resumes from its own newest state, so the
retry costs only the steps since then.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from likeness.core import metrics
from likeness.core.errors import FailedPrecondition, LikenessError
from likeness.core.images import ImageLimits, encode_png
from likeness.training.dataset import Dataset, load_dataset
from likeness.training.distributed import Ranks
from likeness.training.evaluation import Evaluator, choose_best
from likeness.training.models import BaseModels
from likeness.training.registry import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    ArtifactRef,
    CheckpointRecord,
    RunRecord,
    RunRegistry,
)
from likeness.training.spec import RunSpec
from likeness.training.trainer import Hooks, LoraTrainer, grid_image, resolve_device

log = logging.getLogger("likeness.training.runner")

SAFETENSORS = "application/octet-stream"
CANCEL_POLL_SECONDS = 1.0  # how often the loop reads the registry's cancel flag


@dataclass
class RunContext:
    registry: RunRegistry
    store: object  # likeness.core.store.ArtifactStore
    models: BaseModels
    evaluator: Evaluator
    limits: ImageLimits
    gradient_checkpointing: str = "auto"  # on / off / auto (on for GPUs)


class CheckpointWriter:
    """Writes one checkpoint's files to the store and records them with their evaluation."""

    def __init__(self, ctx: RunContext, run: RunRecord, spec: RunSpec, trainer: LoraTrainer, workdir: Path):
        self.ctx, self.run, self.spec, self.trainer, self.workdir = ctx, run, spec, trainer, workdir
        self.metadata = {
            "likeness_run_id": run.run_id, "base_model": spec.base_model, "base_model_digest": run.base_model_digest,
            "trigger_token": spec.trigger_token, "dataset_digest": run.dataset_digest,
            "captions_digest": run.captions_digest, "resolution": str(spec.resolution),
            # save_lora adds the ss_* / modelspec.* keys kohya-ss writes (rank, alpha, architecture)
            "ss_output_name": spec.name or run.run_id, "ss_sd_model_name": spec.base_model,
            "ss_seed": str(spec.seed), "ss_unet_lr": str(spec.unet_lr), "ss_text_encoder_lr": str(spec.text_encoder_lr),
        }

    def _put(self, key: str, path: Path, media_type: str = SAFETENSORS) -> ArtifactRef:
        return ArtifactRef.of(self.ctx.store.put_file(f"{self.spec.output_prefix}/{key}", path, media_type))

    def write(self, epoch: int, step: int, loss: float) -> CheckpointRecord:
        t0 = time.perf_counter()
        meta = {**self.metadata, "epoch": str(epoch), "step": str(step), "ss_epoch": str(epoch),
                "ss_steps": str(step)}
        d = self.workdir / f"epoch-{epoch:04d}"
        folder = f"checkpoints/epoch-{epoch:04d}"
        diffusers = self._put(f"{folder}/lora.safetensors",
                              self.trainer.save_weights(d / "lora.safetensors", "diffusers", meta))
        kohya = self._put(f"{folder}/lora_kohya.safetensors",
                          self.trainer.save_weights(d / "lora_kohya.safetensors", "kohya", meta))
        state = self._put(f"{folder}/state.pt", self.trainer.save_state(d / "state.pt"))
        t1 = time.perf_counter()
        prompts, seeds = list(self.spec.sample_prompts), list(self.spec.sample_seeds)
        rows = self.trainer.sample(prompts, seeds, self.spec.sample_steps)
        grid_path = d / "samples.png"
        grid_path.write_bytes(encode_png(grid_image(rows)))
        grid = self._put(f"{folder}/samples.png", grid_path, "image/png")
        t2 = time.perf_counter()
        ev = self.ctx.evaluator.evaluate(rows, prompts, seeds)
        t3 = time.perf_counter()
        for note in ev.notes:
            self.ctx.registry.add_note(self.run.run_id, note)
        seconds = {"save": round(t1 - t0, 4), "sample": round(t2 - t1, 4), "evaluate": round(t3 - t2, 4)}
        for stage, value in (("checkpoint", t1 - t0), ("sampling", t2 - t1), ("evaluation", t3 - t2)):
            metrics.STAGE_DURATION.labels("training", stage).observe(value)
        record = CheckpointRecord(epoch, step, loss, diffusers, kohya, state, grid, ev.clip_score,
                                  ev.identity_similarity, ev.to_dict(), False, seconds)
        self.ctx.registry.add_checkpoint(self.run.run_id, record)
        self.ctx.registry.add_timings(self.run.run_id, checkpoint=seconds["save"], sampling=seconds["sample"],
                                      evaluation=seconds["evaluate"])
        checkpoints = self.ctx.registry.get(self.run.run_id, with_loss=False).checkpoints
        best = choose_best([(c.step, c.identity_similarity, c.clip_score) for c in checkpoints])
        self.ctx.registry.set_best(self.run.run_id, checkpoints[best].epoch)
        return record


def _resume_source(ctx: RunContext, run: RunRecord) -> tuple[str, ArtifactRef] | None:
    """(run id, state) to continue from: this run's own newest state, else its parent's."""
    if run.latest_state is not None:
        return run.run_id, run.latest_state[1]
    if run.resume_from:
        parent = ctx.registry.get(run.resume_from, with_loss=False)
        if parent.latest_state is None:
            raise FailedPrecondition("resume_from_run_id", f"run {parent.run_id} has no saved state to resume from")
        return parent.run_id, parent.latest_state[1]
    return None


def execute(ctx: RunContext, run_id: str, *, dataset: Dataset | None = None,
            cancel: threading.Event | None = None, pipe=None, ranks: Ranks | None = None) -> str:
    """Runs `run_id` to its end; returns the final state. Never raises for a run's own failure:
    the reason is recorded in the registry (FAILED), so watchers see it. A stop without CancelRun
    (`cancel` set by a shutting-down process) saves the state and leaves the run RUNNING without
    an owner, for the next process to adopt ("running" is returned).

    With several ranks (torchrun), every rank trains its share and only rank 0 writes; a lost
    rank leaves the run RUNNING at its last checkpoint, and the launcher's retry resumes it."""
    ranks = ranks or Ranks()
    registry = ctx.registry
    run = registry.get(run_id, with_loss=False)
    if run.finished:
        return run.state
    spec = RunSpec.from_dict(run.spec)
    cancel = cancel or threading.Event()
    try:
        return _execute(ctx, run, spec, dataset, cancel, pipe, ranks)
    except LikenessError as exc:
        if ranks.is_main:
            log.warning("run failed", extra={"run_id": run_id, "error": str(exc)})
            registry.finish(run_id, FAILED, str(exc))
    except Exception as exc:  # noqa: BLE001 - a crash of one run must not take the service down
        if ranks.distributed:  # most likely a lost peer: the launcher's retry resumes from the checkpoint
            log.exception("rank failed", extra={"run_id": run_id, "rank": ranks.rank})
            if ranks.is_main:
                registry.add_note(run_id, f"rank {ranks.rank} of {ranks.world_size} stopped: "
                                          f"{type(exc).__name__}: {str(exc)[:300]}; a retry resumes from the "
                                          "last checkpoint")
                registry.release(run_id)
            return "running"
        log.exception("run crashed", extra={"run_id": run_id})
        registry.finish(run_id, FAILED, f"internal error: {type(exc).__name__}: {exc}")
    return FAILED


def _execute(ctx: RunContext, run: RunRecord, spec: RunSpec, dataset: Dataset | None, cancel: threading.Event,
             pipe, ranks: Ranks) -> str:
    registry, run_id = ctx.registry, run.run_id
    t_setup = time.perf_counter()
    trainer, dataset = _build_trainer(ctx, run, spec, dataset, pipe, ranks)
    with tempfile.TemporaryDirectory(prefix=f"train-{run_id}-") as tmp:
        workdir = Path(tmp)
        _restore(ctx, run, trainer, workdir, ranks)
        proceed = registry.mark_running(run_id, total_steps=trainer.total_steps,
                                        step=trainer.step) if ranks.is_main else True
        if not ranks.main_decides(proceed):
            if ranks.is_main:
                now = registry.get(run_id, with_loss=False)  # cancelled while it was set up
                if not now.finished:
                    registry.finish(run_id, CANCELLED)
            return registry.get(run_id, with_loss=False).state
        if ranks.is_main:
            note = ctx.evaluator.set_reference([i.pixels for i in dataset.items])
            if note:
                registry.add_note(run_id, note)
            if ranks.distributed:
                registry.add_note(run_id, f"data parallel: {ranks.world_size} ranks ({ranks.backend}), global "
                                          f"batch {spec.batch_size} split across them")
            registry.add_timings(run_id, setup=time.perf_counter() - t_setup)
        outcome = _train(ctx, run, spec, trainer, workdir, cancel, ranks)
        if outcome == CANCELLED and ranks.is_main:  # by CancelRun, or paused by a shutting-down process
            path = trainer.save_state(workdir / "stop-state.pt")
            key = f"{spec.output_prefix}/state/step-{trainer.step:08d}.pt"
            registry.set_resume_state(run_id, trainer.step, ArtifactRef.of(ctx.store.put_file(key, path)))
            if not registry.cancel_requested(run_id):
                registry.release(run_id)
                registry.add_note(run_id, f"paused at step {trainer.step} by a shutdown; resumed when "
                                          "a training service adopts it")
                return "running"
    if ranks.is_main:
        registry.finish(run_id, outcome)
    return outcome


def _build_trainer(ctx: RunContext, run: RunRecord, spec: RunSpec, dataset: Dataset | None, pipe,
                   ranks: Ranks) -> tuple[LoraTrainer, Dataset]:
    from likeness.diffusion.pipelines import load_pipeline

    model = ctx.models.resolve(spec.base_model)
    if dataset is None:
        dataset = load_dataset(ctx.store, spec.dataset_uri, policy=spec.missing_caption_policy, limits=ctx.limits)
    if (dataset.dataset_digest, dataset.captions_digest) != (run.dataset_digest, run.captions_digest):
        raise FailedPrecondition("spec.dataset_uri", "the dataset changed since the run was started "
                                 "(image or caption digests differ); start a new run")
    device = resolve_device(ranks.local_rank)
    pipe = pipe or load_pipeline(model.path, model.kind, device=device)
    checkpointing = {"on": True, "off": False}.get(ctx.gradient_checkpointing, device != "cpu")
    trainer = LoraTrainer(spec, pipe, model.kind, dataset, device=device, run_id=run.run_id,
                          gradient_checkpointing=checkpointing, ranks=ranks)
    return trainer, dataset


def _restore(ctx: RunContext, run: RunRecord, trainer: LoraTrainer, workdir: Path, ranks: Ranks) -> None:
    """Loads the newest saved state (this run's, else its parent's) on every rank."""
    source = _resume_source(ctx, run)
    if source is None:
        return
    t0 = time.perf_counter()
    path = workdir / "resume-state.pt"
    ctx.store.get_to_file(source[1].uri, path)
    trainer.load_state(path)
    if ranks.is_main:
        ctx.registry.add_timings(run.run_id, resume=time.perf_counter() - t0)
    log.info("resumed", extra={"run_id": run.run_id, "from_run": source[0], "step": trainer.step,
                               "rank": ranks.rank})


def _train(ctx: RunContext, run: RunRecord, spec: RunSpec, trainer: LoraTrainer, workdir: Path,
           cancel: threading.Event, ranks: Ranks) -> str:
    if not ranks.is_main:  # rank 0 records, checkpoints and decides stops; the others only train
        outcome = trainer.train(Hooks())
        return CANCELLED if outcome.state == "cancelled" else SUCCEEDED
    registry, writer = ctx.registry, CheckpointWriter(ctx, run, spec, trainer, workdir)
    last_poll = [0.0]
    spent_on_checkpoints = [0.0]
    last_step_at = [time.perf_counter()]

    def should_stop() -> bool:
        if cancel.is_set():
            return True
        now = time.monotonic()
        if now - last_poll[0] >= CANCEL_POLL_SECONDS:  # CancelRun from another replica or a Job
            last_poll[0] = now
            if registry.cancel_requested(run.run_id):
                cancel.set()
        return cancel.is_set()

    def on_epoch_end(epoch: int, step: int, mean_loss: float) -> None:
        if epoch % spec.checkpoint_every_epochs == 0 or step >= trainer.total_steps:
            t0 = time.perf_counter()
            writer.write(epoch, step, mean_loss)
            spent_on_checkpoints[0] += time.perf_counter() - t0
            last_step_at[0] = time.perf_counter()  # the next step's time excludes the checkpoint

    step_timer = metrics.STAGE_DURATION.labels("training", "step")

    def on_step(result) -> None:
        now = time.perf_counter()
        step_timer.observe(now - last_step_at[0])
        last_step_at[0] = now
        registry.record_step(run.run_id, result.step, result.loss, result.lr)

    t0 = time.perf_counter()
    outcome = trainer.train(Hooks(on_step=on_step, should_stop=should_stop, on_epoch_end=on_epoch_end))
    registry.add_timings(run.run_id, train=time.perf_counter() - t0 - spent_on_checkpoints[0])
    return CANCELLED if outcome.state == "cancelled" else SUCCEEDED
