"""`likeness up | down | curate | train | storyboard | open-eyes | diversity | jobs`.

The job commands' flags are generated from the spec messages (cli_spec), so each field of the five
specs has one. They reach the stack named by its state file (stack_state), written by `likeness up`
and by `make up`, and upload local folders into that stack's own artifact store."""

from __future__ import annotations

import inspect
import json
import sys
import time
from pathlib import Path

import typer
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from likeness.api.v1 import orchestrator_pb2
from likeness.client import cli_spec, stack_state

console = Console()
LOCAL_STATE = Path("/tmp/likeness-local")
COMMON = "connection and output"


def _state_option(default=None):
    return typer.Option(default, "--state", help="state folder (or its stack.json) of a stack started by `likeness up` "
                                                 "or `make up`; default: $LIKENESS_STATE_DIR, else the running one",
                        rich_help_panel=COMMON)


def _stack(state: Path | None) -> dict:
    try:
        return stack_state.find(state)
    except stack_state.NoStack as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


def _address(stack: dict, address: str) -> str:
    return address or (stack.get("client") or {}).get("orchestrator") or "127.0.0.1:50050"


def _token(stack: dict, token: str) -> str:
    return token or (stack.get("client") or {}).get("token", "")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    for kind, (argument, doc) in POSITIONAL.items():
        app.command(name=kind.replace("_", "-"), help=doc)(job_command(kind, argument))
    app.command()(jobs)


def up(state: Path = typer.Option(LOCAL_STATE, "--state",
                                  help="state folder: store, models, databases, logs, stack.json"),
       detach: bool = typer.Option(False, help="return once SERVING; `likeness down` stops"),
       base_port: int = typer.Option(0, help="first of six consecutive ports (0 = the default ports)")) -> None:
    """Start every service on loopback with embedded defaults and show their health."""
    from likeness.client.local import ORDER, LocalStack, health

    stack = LocalStack(state, base_port=base_port)
    (stack.state / "env.json").write_text(json.dumps(stack.env))
    with console.status("starting services (models warm up first)...") as status:
        stack.up(on_tick=lambda ready: status.update(f"SERVING: {', '.join(ready) or 'none yet'}"))
    stack_state.update(stack.state, running=True, kind="likeness up", dir=str(stack.state), ports=stack.ports,
                       client=stack_state.client_block(stack.address("orchestrator"), stack.env))
    table = Table("service", "address", "health", "log")
    for name in ORDER:
        table.add_row(name, stack.address(name), health(stack.address(name)), str(stack.procs[name].log))
    console.print(table)
    console.print(f"store: {stack.env['LIKENESS_STORE_URI']}  state: {stack.state / stack_state.FILE}")
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
        stack_state.update(stack.state, running=False)


def down(state: Path = typer.Option(LOCAL_STATE, "--state", help="state folder of `likeness up`")) -> None:
    """Stop a detached local stack."""
    from likeness.client.local import down_from_pidfile

    stopped = down_from_pidfile(state)
    if (state / stack_state.FILE).exists():
        stack_state.update(state, running=False)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def upload_folder(stack: dict, folder: Path) -> str:
    """A local folder copied into the stack's store under a content-addressed prefix; returns its URI."""
    from likeness.core.store import open_store
    from likeness.core.workid import sha256_hex

    store = open_store(stack_state.store_settings(stack))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = sha256_hex("\n".join(f"{p.relative_to(folder)}:{p.stat().st_size}" for p in files).encode())[:16]
    prefix = f"imports/{digest}/"
    for p in files:
        key = prefix + str(p.relative_to(folder))
        if not store.exists(key):
            store.put_file(key, p)
    return store.uri(prefix)


# kind -> (positional argument: (name, flag parameter it fills, help), command help)
POSITIONAL = {
    "curate": (("source", "import_source_uri", "local folder (uploaded to the stack's store) or store prefix of "
                "candidates, laid out <seed>/<type>/<name>.png; omit to generate candidates (--generate-*)"),
               "Curate a LoRA training set from imported or generated candidates."),
    "train": (("dataset", "dataset_uri", "store prefix (or local folder, uploaded) of a curated dataset"),
              "Train a LoRA adapter on a curated dataset."),
    "storyboard": (None, "Generate a validated storyboard of one character (--frame-prompts, repeat)."),
    "open_eyes": (("image", "image", "a local image file or a store URI"),
                  "Repair the eyes of a face: mask, inpaint variations, composite, restore."),
    "diversity": (("reference", "reference_uri", "local folder (uploaded) or store prefix of reference images"),
                  "Measure the diversity of generated faces over settings (--setting, repeat) against a reference "
                  "set."),
}
# The embedded stack's model, so the commands run as written on `likeness up` / `make up`.
DEFAULTS = {"model": "tiny-sdxl", "base_model": "tiny-sdxl", "rank": 4}


def _common_parameters() -> list[inspect.Parameter]:
    """The flags every job command has: where the stack is, how to submit, what to print."""
    return [
        inspect.Parameter("state", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None, default=_state_option()),
        inspect.Parameter("address", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
            "", help="orchestrator host:port (default: the stack's)", rich_help_panel=COMMON)),
        inspect.Parameter("token", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
            "", envvar="LIKENESS_TOKEN", help="bearer token (default: the stack's)", rich_help_panel=COMMON)),
        inspect.Parameter("idempotency_key", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
            "", help="resubmitting with the same key returns the existing job", rich_help_panel=COMMON)),
        inspect.Parameter("wait", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            True, help="follow the job until it ends", rich_help_panel=COMMON)),
        inspect.Parameter("json_output", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            False, "--json", help="print the job as JSON on stdout (progress stays on stderr)",
            rich_help_panel=COMMON)),
        inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            False, help="print the spec as JSON and submit nothing", rich_help_panel=COMMON)),
    ]


def job_command(kind: str, argument):
    params = cli_spec.parameters(kind)
    for i, p in enumerate(params):
        if p.name in DEFAULTS and p.default.default is None:
            p.default.default = DEFAULTS[p.name]
            p.default.show_default = True
            params[i] = p
    if argument is not None:
        name, _, text = argument
        params = [p for p in params if p.name != name]  # the argument replaces the flag of the same name
        params.insert(0, inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str | None,
                                           default=typer.Argument(None, help=text, show_default=False)))
    params += _common_parameters()

    def command(**kw):
        stack = _stack(kw.pop("state"))
        address, token = _address(stack, kw.pop("address")), _token(stack, kw.pop("token"))
        key, wait, as_json, dry = kw.pop("idempotency_key"), kw.pop("wait"), kw.pop("json_output"), kw.pop("dry_run")
        if argument is not None:
            name, target, _ = argument
            value = kw.pop(name)
            if value is not None:
                local = Path(value).expanduser()
                kw[target] = upload_folder(stack, local) if local.is_dir() and not dry else value
        if kind == "curate" and any(v not in (None, []) for k, v in kw.items() if k.startswith("generate_")):
            if kw.get("import_source_uri"):
                raise typer.BadParameter("give a SOURCE to import or --generate-* flags, not both")
            kw["generate_model"] = kw.get("generate_model") or DEFAULTS["model"]
        spec = cli_spec.build_spec(kind, kw)
        if dry:
            typer.echo(cli_spec.spec_json(spec))
            return
        submit(spec, address, token, wait, as_json, key)

    command.__signature__ = inspect.Signature(params)
    command.__name__ = kind
    return command


def _job_json(job: orchestrator_pb2.Job) -> str:
    return json.dumps(json_format.MessageToDict(job), indent=2)


def submit(spec: orchestrator_pb2.JobSpec, address: str, token: str, wait: bool, as_json: bool, key: str = "") -> None:
    import grpc

    from likeness.client.jobs_client import JobsClient

    client = JobsClient(address, token)
    try:
        job = client.submit(spec, key)
    except grpc.RpcError as exc:
        Console(stderr=True).print(f"[red]{exc.code().name}[/]: {exc.details()}")
        raise typer.Exit(2) from exc
    err = Console(stderr=True)
    err.print(f"job [bold]{job.job_id}[/] queued ({orchestrator_pb2.JobKind.Name(job.kind)})")
    if wait:
        job = client.follow(job.job_id, console=err)
    client.close()
    if as_json:
        typer.echo(_job_json(job))
    else:
        print_job(job)
    if wait and job.state != orchestrator_pb2.JOB_STATE_SUCCEEDED:
        raise typer.Exit(1)


def outcome_line(job: orchestrator_pb2.Job) -> str:
    state = orchestrator_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
    reason = job.error or job.summary.get("note", "")
    return f"{state}: {reason}" if reason else state


def print_job(job: orchestrator_pb2.Job) -> None:
    """The outcome and its reason first, then stand-ins, the summary and where the outputs are."""
    failed = job.state in (orchestrator_pb2.JOB_STATE_FAILED, orchestrator_pb2.JOB_STATE_CANCELLED)
    console.print(f"[bold {'red' if failed else 'green'}]{outcome_line(job)}[/]", soft_wrap=True)
    table = Table("field", "value", title=f"job {job.job_id} ({orchestrator_pb2.JobKind.Name(job.kind)})")
    table.add_row("state", orchestrator_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_"))
    if job.error:
        table.add_row("reason", job.error)
    if "stand_in_models" in job.summary:
        table.add_row("stand-in models", job.summary["stand_in_models"])
    for k, v in sorted(job.summary.items()):
        if k not in ("stand_in_models",):
            table.add_row(k, v)
    if job.report.uri:
        table.add_row("report", job.report.uri)
        table.add_row("manifest", job.manifest.uri)
    console.print(table)


def jobs(action: str = typer.Argument("list", help="list | show | cancel"), job_id: str = typer.Argument(""),
         state: Path | None = _state_option(), address: str = typer.Option("", help="orchestrator host:port"),
         token: str = typer.Option("", envvar="LIKENESS_TOKEN"),
         as_json: bool = typer.Option(False, "--json", help="print JSON on stdout")) -> None:
    """List jobs, show one (its outcome and reason first), or cancel one."""
    from likeness.client.jobs_client import JobsClient

    stack = _stack(state)
    client = JobsClient(_address(stack, address), _token(stack, token))
    if action == "list":
        found = client.list()
        if as_json:
            typer.echo(json.dumps([json_format.MessageToDict(j) for j in found], indent=2))
            return
        table = Table("job", "kind", "outcome", "attempts", "created", "summary")
        for j in found:
            table.add_row(j.job_id, orchestrator_pb2.JobKind.Name(j.kind).removeprefix("JOB_KIND_").lower(),
                          outcome_line(j)[:120], str(j.attempts),
                          j.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
                          ", ".join(f"{k}={v}" for k, v in sorted(j.summary.items())[:4]))
        console.print(table)
    elif action in ("show", "cancel") and job_id:
        job = client.get(job_id) if action == "show" else client.cancel(job_id)
        if as_json:
            typer.echo(_job_json(job))
        else:
            print_job(job)
    else:
        print("usage: likeness jobs [list | show JOB_ID | cancel JOB_ID]", file=sys.stderr)
        raise typer.Exit(2)
