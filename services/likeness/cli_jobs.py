"""`likeness up | down | curate | train | storyboard | open-eyes | diversity | jobs`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from likeness.api.v1 import common_pb2, generation_pb2, orchestrator_pb2, training_pb2

console = Console()
STATE = Path(os.environ.get("LIKENESS_STATE_DIR", "/tmp/likeness-local"))
state_opt = typer.Option(STATE, "--state", help="state folder of the local stack (store, models, databases, logs)")
address_opt = typer.Option("", "--address", help="orchestrator host:port (default: the local stack's)")
token_opt = typer.Option("", "--token", envvar="LIKENESS_TOKEN", help="bearer token of the orchestrator API")


def _env(state: Path) -> dict:
    path = state / "env.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _address(state: Path, address: str) -> str:
    if address:
        return address
    ports = json.loads(_env(state).get("_LIKENESS_PORTS", "{}"))
    return f"127.0.0.1:{ports.get('orchestrator', 50050)}"


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(curate)
    app.command()(train)
    app.command()(storyboard)
    app.command(name="open-eyes")(open_eyes)
    app.command()(diversity)
    app.command()(jobs)


def up(state: Path = state_opt, detach: bool = typer.Option(False, help="return once SERVING; `likeness down` stops"),
       base_port: int = typer.Option(0, help="first of six consecutive ports (0 = the default ports)")) -> None:
    """Start every service on loopback with embedded defaults and show their health."""
    from likeness.local import ORDER, LocalStack, health

    stack = LocalStack(state, base_port=base_port)
    (stack.state / "env.json").write_text(json.dumps(stack.env))
    with console.status("starting services (models warm up first)...") as status:
        stack.up(on_tick=lambda ready: status.update(f"SERVING: {', '.join(ready) or 'none yet'}"))
    table = Table("service", "address", "health", "log")
    for name in ORDER:
        table.add_row(name, stack.address(name), health(stack.address(name)), str(stack.procs[name].log))
    console.print(table)
    console.print(f"store: {stack.env['LIKENESS_STORE_URI']}")
    if detach:
        return
    console.print("Ctrl-C stops every service.")
    try:
        while all(p.process.poll() is None for p in stack.procs.values()):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stack.down()


def down(state: Path = state_opt) -> None:
    """Stop a detached local stack."""
    from likeness.local import down_from_pidfile

    stopped = down_from_pidfile(state)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def _run(spec: orchestrator_pb2.JobSpec, state: Path, address: str, token: str, wait: bool) -> None:
    import grpc

    from likeness.jobs_client import JobsClient

    client = JobsClient(_address(state, address), token)
    try:
        job = client.submit(spec)
    except grpc.RpcError as exc:
        console.print(f"[red]{exc.code().name}[/]: {exc.details()}")
        raise typer.Exit(2) from exc
    console.print(f"job [bold]{job.job_id}[/] queued ({orchestrator_pb2.JobKind.Name(job.kind)})")
    if not wait:
        return
    job = client.follow(job.job_id)
    _print_job(job)
    client.close()
    if job.state != orchestrator_pb2.JOB_STATE_SUCCEEDED:
        raise typer.Exit(1)


def _print_job(job: orchestrator_pb2.Job) -> None:
    table = Table("field", "value", title=f"job {job.job_id}")
    table.add_row("state", orchestrator_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_"))
    for k, v in sorted(job.summary.items()):
        table.add_row(k, v)
    if job.error:
        table.add_row("error", job.error)
    if job.report.uri:
        table.add_row("report", job.report.uri)
        table.add_row("manifest", job.manifest.uri)
    console.print(table)


def _upload_folder(state: Path, folder: Path) -> str:
    """A local folder is copied into the store (content-addressed prefix), so services can read it."""
    from likeness.core.settings import CommonSettings
    from likeness.core.store import open_store
    from likeness.core.workid import sha256_hex

    env = _env(state)
    settings = CommonSettings(store_uri=env.get("LIKENESS_STORE_URI", os.environ.get("LIKENESS_STORE_URI", "file:///tmp/likeness/store")))
    store = open_store(settings)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = sha256_hex("\n".join(f"{p.relative_to(folder)}:{p.stat().st_size}" for p in files).encode())[:16]
    prefix = f"imports/{digest}/"
    for p in files:
        key = prefix + str(p.relative_to(folder))
        if not store.exists(key):
            store.put_file(key, p)
    return store.uri(prefix)


def curate(source: str = typer.Argument(..., help="local folder or store prefix of candidates (<seed>/<type>/<name>.png)"),
           target: int = typer.Option(24, help="images in the final set"),
           per_seed_max: int = typer.Option(0, help="at most this many per seed (0 = no bound)"),
           per_seed_min: int = typer.Option(0, help="at least this many per seed"),
           per_cluster_max: int = typer.Option(0, help="at most this many per cluster"),
           clusters: int = typer.Option(0, help="K of K-Means (0 = chosen by silhouette)"),
           top_k: int = typer.Option(0, help="keep the best K by quality before clustering (0 = all)"),
           trigger: str = typer.Option("ohwx person", help="trigger token written into every caption"),
           output: str = typer.Option("", help="store prefix of the dataset"),
           state: Path = state_opt, address: str = address_opt, token: str = token_opt,
           wait: bool = typer.Option(True, help="follow the job until it ends")) -> None:
    """Curate a LoRA training set from candidate images."""
    uri = _upload_folder(state, Path(source)) if Path(source).is_dir() else source
    quotas = []
    if per_seed_min or per_seed_max:
        quotas.append(common_pb2.Quota(dimension="seed", group="*", min=per_seed_min, max=per_seed_max))
    if per_cluster_max:
        quotas.append(common_pb2.Quota(dimension="cluster", group="*", max=per_cluster_max))
    spec = orchestrator_pb2.JobSpec(curate=orchestrator_pb2.CurateSpec(
        import_source=orchestrator_pb2.ImportSource(uri=uri), target_count=target, quotas=quotas, clusters=clusters,
        top_k=top_k, trigger_token=trigger, output_prefix=output))
    _run(spec, state, address, token, wait)


def train(dataset: str = typer.Argument(..., help="store prefix of a curated dataset"),
          model: str = typer.Option("tiny-sdxl"), rank: int = typer.Option(4), alpha: float = typer.Option(0.0),
          epochs: int = typer.Option(2), resolution: int = typer.Option(0), lr: float = typer.Option(1e-4),
          trigger: str = typer.Option("ohwx person"), seed: int = typer.Option(0), name: str = typer.Option(""),
          state: Path = state_opt, address: str = address_opt, token: str = token_opt, wait: bool = typer.Option(True)) -> None:
    """Train a LoRA adapter on a curated dataset."""
    run = training_pb2.RunSpec(name=name or f"cli-rank{rank}", base_model=model, dataset_uri=dataset, trigger_token=trigger,
                               rank=rank, alpha=alpha or float(rank), unet_lr=lr, epochs=epochs, resolution=resolution, seed=seed)
    _run(orchestrator_pb2.JobSpec(train=orchestrator_pb2.TrainSpec(run=run)), state, address, token, wait)


def storyboard(frames: list[str] = typer.Option(..., "--frame", help="a frame prompt (repeat)"),
               character: str = typer.Option("", help="character description prepended to every frame"),
               model: str = typer.Option("tiny-sdxl"), seed: int = typer.Option(0), retries: int = typer.Option(3),
               clip_threshold: float = typer.Option(0.70), skip_clip: bool = typer.Option(False),
               size: int = typer.Option(0, help="width = height in pixels (0 = the model's preset)"),
               steps: int = typer.Option(0), state: Path = state_opt, address: str = address_opt, token: str = token_opt,
               wait: bool = typer.Option(True)) -> None:
    """Generate a validated storyboard of one character."""
    spec = orchestrator_pb2.StoryboardSpec(model=model, character=character, frame_prompts=frames, seed=seed,
                                           retry_budget=retries, clip_threshold=clip_threshold, skip_clip_check=skip_clip,
                                           width=size, height=size, steps=steps)
    _run(orchestrator_pb2.JobSpec(storyboard=spec), state, address, token, wait)


def open_eyes(image: str = typer.Argument(..., help="a local image file or a store URI"),
              model: str = typer.Option("tiny-sdxl"), variations: int = typer.Option(2, help="1 to 16 per face"),
              restore: bool = typer.Option(True, help="restore the face after compositing"),
              fidelity: float = typer.Option(0.7, help="restoration fidelity in [0, 1]"),
              seed: int = typer.Option(0), steps: int = typer.Option(0, help="0 takes the quality preset"),
              quality: str = typer.Option("standard", help="fast, standard, quality or ultra"),
              prompt: str = typer.Option("", help="inpainting prompt; empty takes the default"),
              negative_prompt: str = typer.Option("", help="inpainting negative prompt"),
              strength: float = typer.Option(0.0, help="inpainting strength in (0, 1]; 0 takes the default"),
              face: int = typer.Option(-1, help="repair only this face (Detect's order); -1 repairs every face"),
              state: Path = state_opt, address: str = address_opt, token: str = token_opt, wait: bool = typer.Option(True)) -> None:
    """Repair the eyes of every face (or one): mask, inpaint variations, feathered composite, restore,
    verify and rank."""
    img = common_pb2.ImageInput(data=Path(image).read_bytes()) if Path(image).is_file() else common_pb2.ImageInput(uri=image)
    modes = {"fast": generation_pb2.QUALITY_MODE_FAST, "standard": generation_pb2.QUALITY_MODE_STANDARD,
             "quality": generation_pb2.QUALITY_MODE_QUALITY, "ultra": generation_pb2.QUALITY_MODE_ULTRA}
    if quality not in modes:
        raise typer.BadParameter(f"{quality!r} is not one of {', '.join(modes)}", param_hint="--quality")
    spec = orchestrator_pb2.OpenEyesSpec(image=img, model=model, variations=variations, restore=restore, fidelity=fidelity,
                                         seed=seed, steps=steps, quality_mode=modes[quality], prompt=prompt,
                                         negative_prompt=negative_prompt)
    if strength:
        spec.strength = strength
    if face >= 0:
        spec.face_index = face
    _run(orchestrator_pb2.JobSpec(open_eyes=spec), state, address, token, wait)


def diversity(reference: str = typer.Argument(..., help="local folder or store prefix of reference images"),
              model: str = typer.Option("tiny-sdxl"), prompt: str = typer.Option("portrait photo of a person"),
              setting: list[str] = typer.Option(..., help="name:seed_start:count[:guidance[:sampler[:noise]]] (repeat); "
                                                          "sampler one of ddim, pndm, dpm, euler, euler_a"),
              size: int = typer.Option(0), nearest_k: int = typer.Option(3), state: Path = state_opt,
              address: str = address_opt, token: str = token_opt, wait: bool = typer.Option(True)) -> None:
    """Measure diversity of generated faces over settings against a reference set."""
    samplers = {"": 0, "ddim": generation_pb2.SAMPLER_DDIM, "pndm": generation_pb2.SAMPLER_PNDM,
                "dpm": generation_pb2.SAMPLER_DPM_SOLVER_MULTISTEP, "euler": generation_pb2.SAMPLER_EULER,
                "euler_a": generation_pb2.SAMPLER_EULER_ANCESTRAL}
    settings = []
    for text in setting:
        parts = text.split(":") + [""] * 6
        s = orchestrator_pb2.DiversitySetting(name=parts[0], seed_start=int(parts[1] or 0), count=int(parts[2] or 8),
                                              sampler=samplers[parts[4]], noise_injection=float(parts[5] or 0))
        if parts[3]:
            s.guidance_scale = float(parts[3])
        settings.append(s)
    ref = _upload_folder(state, Path(reference)) if Path(reference).is_dir() else reference
    spec = orchestrator_pb2.DiversitySpec(model=model, prompt=prompt, reference_uri=ref, settings=settings, width=size,
                                          height=size, nearest_k=nearest_k)
    _run(orchestrator_pb2.JobSpec(diversity=spec), state, address, token, wait)


def jobs(action: str = typer.Argument("list", help="list | show | cancel"), job_id: str = typer.Argument(""),
         state: Path = state_opt, address: str = address_opt, token: str = token_opt) -> None:
    """List jobs, show one, or cancel one."""
    from likeness.jobs_client import JobsClient

    client = JobsClient(_address(state, address), token)
    if action == "list":
        table = Table("job", "kind", "state", "attempts", "created", "summary")
        for j in client.list():
            table.add_row(j.job_id, orchestrator_pb2.JobKind.Name(j.kind).removeprefix("JOB_KIND_").lower(),
                          orchestrator_pb2.JobState.Name(j.state).removeprefix("JOB_STATE_"), str(j.attempts),
                          j.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
                          ", ".join(f"{k}={v}" for k, v in sorted(j.summary.items())[:4]))
        console.print(table)
    elif action in ("show", "cancel") and job_id:
        _print_job(client.get(job_id) if action == "show" else client.cancel(job_id))
    else:
        console.print("usage: likeness jobs [list | show JOB_ID | cancel JOB_ID]")
        raise typer.Exit(2)
