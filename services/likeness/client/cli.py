"""The `likeness` command. Each subcommand is a thin front over client or domain code."""

from __future__ import annotations

import importlib
import sys

import typer

import likeness

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Likeness: face and character image services.")

SERVICES = ("orchestrator", "detection", "generation", "embedding", "restoration", "training")


@app.command()
def version() -> None:
    """Print the Likeness version."""
    typer.echo(likeness.__version__)


@app.command()
def health(address: str = typer.Argument(..., help="host:port of a Likeness service"),
           service: str = typer.Option("", help="full service name; empty = the whole server"),
           timeout: float = typer.Option(5.0, help="seconds")) -> None:
    """Ask a service's gRPC health endpoint; exit 0 when SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from likeness.core.channels import sync_channel

    with sync_channel(address, max_attempts=1) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            typer.echo(f"{address}: {exc.code().name} {exc.details()}", err=True)
            raise typer.Exit(2) from exc
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    typer.echo(f"{address} {service or '(server)'}: {status}")
    raise typer.Exit(0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1)


@app.command()
def serve(service: str = typer.Argument(..., help=f"one of {', '.join(SERVICES)}")) -> None:
    """Run one service in the foreground (settings from LIKENESS_* environment variables)."""
    if service not in SERVICES:
        typer.echo(f"unknown service '{service}'; expected one of {', '.join(SERVICES)}", err=True)
        raise typer.Exit(2)
    module = importlib.import_module(f"likeness.{service}.app")
    module.main()


def main() -> None:  # pragma: no cover
    sys.exit(app())


from likeness.client import cli_jobs  # noqa: E402

cli_jobs.register(app)
