"""Train: start a run on a curated dataset, follow it, report its checkpoints.

The run id is derived from the job id, so a resumed job follows the run it started instead of
starting a second one (the training service resumes the run itself from its last checkpoint)."""

from __future__ import annotations

import grpc

from likeness.api.v1 import orchestrator_pb2, training_pb2
from likeness.core.errors import FailedPrecondition
from likeness.orchestrator import report
from likeness.orchestrator.context import JobContext, Outcome

RUN_DONE = (training_pb2.RUN_STATE_SUCCEEDED, training_pb2.RUN_STATE_FAILED, training_pb2.RUN_STATE_CANCELLED)


async def _start(ctx: JobContext, spec: orchestrator_pb2.TrainSpec) -> str:
    req = training_pb2.StartRunRequest(spec=spec.run)
    resp = await ctx.call(ctx.clients.training, "StartRun", req, work="train-start", inputs={"job": ctx.job_id})
    return resp.run.run_id


async def _follow(ctx: JobContext, run_id: str) -> None:
    last_step = -1
    try:
        async for ev in ctx.clients.training.stream("WatchRun", training_pb2.WatchRunRequest(run_id=run_id)):
            ctx.check_cancel()
            if ev.step != last_step:
                last_step = ev.step
                await ctx.progress("train", int(ev.step), int(ev.total_steps),
                                   f"loss {ev.loss:.4f} eta {ev.eta_seconds:.0f}s")
            if ev.HasField("checkpoint") and ev.checkpoint.epoch:
                await ctx.event("ITEM_DONE", f"checkpoint epoch {ev.checkpoint.epoch} step {ev.checkpoint.step}",
                                "train")
            if ev.state in RUN_DONE:
                return
    except grpc.aio.AioRpcError as exc:  # stream broken (service restart): GetRun below tells the state
        await ctx.warn(f"watch stream ended: {exc.code().name}", "train")


async def _run_to_end(ctx: JobContext, spec: orchestrator_pb2.TrainSpec) -> training_pb2.Run:
    """Starts (or finds) the run and follows it until it ends; a cancelled job cancels the run."""
    run_id = await _start(ctx, spec)
    while True:
        try:
            await _follow(ctx, run_id)
        except BaseException:
            if ctx.cancel_requested:
                await ctx.clients.training.call("CancelRun", training_pb2.CancelRunRequest(run_id=run_id))
            raise
        got = await ctx.clients.training.call("GetRun", training_pb2.GetRunRequest(run_id=run_id))
        if got.run.state in RUN_DONE:
            return got.run


async def run(ctx: JobContext, spec: orchestrator_pb2.TrainSpec) -> Outcome:
    await ctx.models.generation_model(ctx.clients, spec.run.base_model, role="base model")
    async with ctx.stage("train"):
        r = await _run_to_end(ctx, spec)
    run_id = r.run_id
    if r.state != training_pb2.RUN_STATE_SUCCEEDED:
        raise FailedPrecondition("spec.train", f"run {run_id} ended {training_pb2.RunState.Name(r.state)}: {r.error}")
    best = next((c for c in r.checkpoints if c.best), r.checkpoints[-1] if r.checkpoints else None)
    summary = {"run_id": run_id, "steps": r.step, "images": r.image_count, "checkpoints": len(r.checkpoints),
               "best_epoch": r.best_epoch, "final_loss": f"{r.loss[-1].loss:.5f}" if r.loss else "n/a"}
    if best is not None:
        summary["best_weights"] = best.diffusers_weights.uri
    manifest = {"run_id": run_id, "dataset_digest": r.dataset_digest, "captions_digest": r.captions_digest,
                "checkpoints": [{"epoch": c.epoch, "step": c.step,
                                 "diffusers": {"uri": c.diffusers_weights.uri, "sha256": c.diffusers_weights.sha256},
                                 "kohya": {"uri": c.kohya_weights.uri, "sha256": c.kohya_weights.sha256}}
                                for c in r.checkpoints]}
    return Outcome(summary, manifest, {"sections": _sections(r, ctx.models.label("base model"))})


def _sections(r: training_pb2.Run, base_model: str) -> list[dict]:
    loss = list(r.loss)
    stride = max(1, len(loss) // 30)
    return [
        report.table("Checkpoints", ["epoch", "step", "loss", "CLIP score", "identity", "best"],
                     [[c.epoch, c.step, f"{c.loss:.4f}", f"{c.clip_score:.3f}", f"{c.identity_similarity:.3f}",
                       "yes" if c.best else ""] for c in r.checkpoints],
                     model=f"base: {base_model}; CLIP score: the embedding service's encoder (n/a without a text "
                           "tower); identity: the detection service's identity model"),
        report.bars("Loss curve", [[f"step {p.step}", round(p.loss, 5)] for p in loss[::stride]]),
        report.gallery("Sample grids", [report.group(f"epoch {c.epoch}", [report.image(c.sample_grid.uri,
                                                                                        f"epoch {c.epoch}")])
                                        for c in r.checkpoints if c.sample_grid.uri]),
        report.table("Settings", ["setting", "value"], [[f.name, str(v)] for f, v in r.spec.ListFields()]),
    ]
