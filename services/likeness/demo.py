"""`make demo`: the curate job end to end through the real services on a candidate set built from
real photos that ship in packages, then a short LoRA training on the selected set with tiny-sdxl.

Every run starts from scratch (store, job store, run registry); the model repository (tiny-sdxl,
built on first use) and the virtualenv are reused.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from likeness.api.v1 import common_pb2, detection_pb2, orchestrator_pb2, training_pb2

console = Console()
ROOT = Path(os.environ.get("LIKENESS_DEMO_DIR", Path.cwd() / "var" / "demo")).resolve()
TRIGGER = "ohwx person"


def curate_spec(candidates_uri: str, seeds: int, min_quality: float) -> orchestrator_pb2.JobSpec:
    """4 candidates per seed (person), exactly, and at least one original per seed on average (the
    balance rules at demo size: duplicate removal leaves each seed its close-up and possibly one of
    its portrait's copies as originals); clusters chosen by silhouette."""
    return orchestrator_pb2.JobSpec(curate=orchestrator_pb2.CurateSpec(
        import_source=orchestrator_pb2.ImportSource(uri=candidates_uri), target_count=4 * seeds, clusters=0,
        quotas=[common_pb2.Quota(dimension="seed", group="*", min=4, max=4),
                common_pb2.Quota(dimension="image_type", group="original", min=seeds)],
        min_quality=min_quality, trigger_token=TRIGGER, output_prefix="datasets/demo/", seed=0,
        # eye gate off: two of the demo's five people look down, and an eye-aspect-ratio cannot tell
        # lowered lids from closed eyes (likeness.orchestrator.demo_set)
        policy=detection_pb2.ValidationPolicy(min_eye_openness=0.0)))


def compare_outcomes(store, manifest_uri: str, demo) -> Table:
    """Expected outcome of every demo file (from how it was made) against the job's decision."""
    import json

    decided = {c["id"]: c for c in json.loads(store.get(manifest_uri))["candidates"]}
    table = Table("outcome", "expected", "got", title="demo set: expected vs curate job")
    expected: dict[str, int] = {}
    got: dict[str, int] = {}
    for item in demo.items:
        cid = str(Path(item.path).with_suffix("")).replace("/", "-")
        c = decided.get(cid, {})
        # `kept` means: passed validation and quality; the selection then takes 24 of those. A
        # duplicate passed them too (one of each duplicate group is kept; the report names the rest)
        passed = ("", "not_selected", "outlier") + (("duplicate",) if item.duplicate_group else ())
        outcome = "kept" if c.get("reason") in passed else c.get("reason", "missing")
        expected[item.expected] = expected.get(item.expected, 0) + 1
        got[outcome] = got.get(outcome, 0) + 1
    for k in sorted(set(expected) | set(got)):
        table.add_row(k, str(expected.get(k, 0)), str(got.get(k, 0)))
    return table


def train_spec(dataset_uri: str) -> orchestrator_pb2.JobSpec:
    return orchestrator_pb2.JobSpec(train=orchestrator_pb2.TrainSpec(run=training_pb2.RunSpec(
        name="demo-rank4", base_model="tiny-sdxl", dataset_uri=dataset_uri, trigger_token=TRIGGER, rank=4, alpha=4,
        unet_lr=1e-4, epochs=2, resolution=64, batch_size=2, seed=0, sample_prompts=[f"{TRIGGER}, portrait"],
        sample_seeds=[1, 2], sample_steps=2)))


def main() -> None:
    from likeness.core.settings import CommonSettings
    from likeness.core.store import open_store
    from likeness.jobs_client import JobsClient
    from likeness.local import LocalStack
    from likeness.orchestrator.demo_set import build_demo_set

    started = time.monotonic()
    for sub in ("store", "logs", "candidates"):
        shutil.rmtree(ROOT / sub, ignore_errors=True)
    for db in ROOT.glob("*.db*"):
        db.unlink()
    ROOT.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]Likeness demo")
    console.print("tiny-sdxl has random weights: its images are noise, used only to exercise training end to end.")

    with console.status("building the demo candidate set from real photos..."):
        demo = build_demo_set(ROOT / "candidates")
    seeds = len({i.seed for i in demo.items})
    console.print(f"candidates: {len(demo.items)} images over {seeds} seeds in {ROOT / 'candidates'}; "
                  f"made to be: {demo.counts()}")

    stack = LocalStack(ROOT)
    store = open_store(CommonSettings(store_uri=stack.env["LIKENESS_STORE_URI"]))
    for p in sorted((ROOT / "candidates").rglob("*")):
        if p.is_file() and p.suffix in (".png", ".txt"):
            store.put_file(f"candidates/{p.relative_to(ROOT / 'candidates')}", p,
                           "image/png" if p.suffix == ".png" else "text/plain")
    try:
        with console.status("starting services (models warm up before they report SERVING)...") as status:
            stack.up(timeout=600, on_tick=lambda ready: status.update(f"SERVING: {', '.join(ready) or 'none yet'}"))
        console.print(f"services up in {time.monotonic() - started:.0f}s: " +
                      ", ".join(f"{n} {stack.address(n)}" for n in stack.services))
        client = JobsClient(stack.address("orchestrator"))
        job = client.submit(curate_spec(store.uri("candidates/"), seeds, demo.min_quality))
        console.print(f"[bold]curate[/] job {job.job_id}")
        curated = client.follow(job.job_id, console)
        show(curated, "curate")
        if curated.state != orchestrator_pb2.JOB_STATE_SUCCEEDED:
            sys.exit(1)
        console.print(compare_outcomes(store, curated.manifest.uri, demo))
        job = client.submit(train_spec(curated.summary["dataset_uri"]))
        console.print(f"[bold]train[/] job {job.job_id} (tiny-sdxl, rank 4, 2 epochs at 64 px)")
        trained = client.follow(job.job_id, console)
        show(trained, "train")
        client.close()
    finally:
        stack.down()
    console.rule(f"done in {time.monotonic() - started:.0f}s")
    console.print(f"curate report: {curated.report.uri}")
    if trained.state == orchestrator_pb2.JOB_STATE_SUCCEEDED:
        console.print(f"train report:  {trained.report.uri}")
    console.print(f"service logs:  {ROOT / 'logs'}")
    if trained.state != orchestrator_pb2.JOB_STATE_SUCCEEDED:
        sys.exit(1)


def show(job: orchestrator_pb2.Job, kind: str) -> None:
    table = Table("field", "value", title=f"{kind} job {job.job_id}: "
                  f"{orchestrator_pb2.JobState.Name(job.state).removeprefix('JOB_STATE_')}")
    for k, v in sorted(job.summary.items()):
        table.add_row(k, v)
    if job.error:
        table.add_row("error", job.error)
    console.print(table)


if __name__ == "__main__":
    main()
