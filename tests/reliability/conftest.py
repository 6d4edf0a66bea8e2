"""Fixtures of the reliability tests: a stack of real service processes that the fault tests may
kill (so it is this package's own, not the shared e2e stack), the demo candidate set in its store,
and a PostgreSQL server that can be restarted under a running orchestrator."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from likeness.client.jobs_client import JobsClient
from likeness.client.local import ORDER, LocalStack
from likeness.core.settings import CommonSettings
from likeness.core.store import open_store
from tests.e2e.conftest import FAST_LEASES, _free_block, demo_curate_spec, upload_demo_set
from tests.helpers import ServiceProcess
from tests.servers import PostgresServer, postgres_bin

# One service call at a time per service from the orchestrator, and no detection result cache:
# a job's calls are spread over time, so a kill lands mid-stage and the restarted process redoes
# real work rather than answering from memory.
FAULT_ENV = {**FAST_LEASES, "LIKENESS_ORCHESTRATOR_SERVICE_CONCURRENCY": "1", "LIKENESS_DETECTION_RESULT_CACHE": "0",
             "LIKENESS_GENERATION_CPU_THREADS": "1"}


@pytest.fixture(scope="session")
def rel_stack(tmp_path_factory):
    """All six services as processes on loopback (local store); tests may kill and restart any."""
    stack = LocalStack(tmp_path_factory.mktemp("reliability"), services=ORDER, base_port=_free_block(),
                       extra_env=FAULT_ENV)
    try:
        stack.up(timeout=600)
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def rel_store(rel_stack):
    return open_store(CommonSettings(store_uri=rel_stack.env["LIKENESS_STORE_URI"]))


@pytest.fixture(scope="session")
def rel_demo(rel_stack, rel_store, tmp_path_factory):
    """The demo candidate set uploaded to the stack's store: (URI of the set, DemoSet)."""
    return upload_demo_set(rel_store, tmp_path_factory.mktemp("demo") / "set", "demo-candidates/")




def kill(stack: LocalStack, name: str) -> int:
    """SIGKILL a stack process (no drain, no graceful shutdown) and forget it; returns its pid."""
    proc = stack.procs.pop(name)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.process.wait(30)
    return proc.pid


def restart(stack: LocalStack, name: str, timeout: float = 300) -> None:
    stack.start(name)
    stack.wait_serving([name], timeout=timeout)


class RestartablePostgres(PostgresServer):
    """PostgresServer plus `restart`: `pg_ctl restart -m fast` keeps the data and the port, drops
    every connection (what a failover or a pod restart does to the clients)."""

    def restart(self, down_seconds: float = 0.0) -> None:
        pg_ctl = postgres_bin("pg_ctl")
        self._run(pg_ctl, "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        time.sleep(down_seconds)
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(pg_ctl, "-D", str(self.datadir), "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start")


@pytest.fixture(scope="session")
def restartable_postgres(tmp_path_factory):
    server = RestartablePostgres(tmp_path_factory.mktemp("pg-restart"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def logs_of(stack: LocalStack) -> dict[str, str]:
    return {p.stem: p.read_text(errors="replace") for p in (stack.state / "logs").glob("*.log")}


def listing(store, prefix: str) -> dict[str, str]:
    """key -> sha256 of every object under prefix."""
    return {k: store.stat(k).sha256 for k in store.list(prefix)}


def clear(store, prefix: str) -> None:
    for k in store.list(prefix):
        store.delete(k)


@contextlib.contextmanager
def fresh_orchestrator(env: dict[str, str], folder: Path, database_url: str):
    """An orchestrator process on its own (empty) job store: no finished work of an earlier job is
    reused, so every call of the job it runs really reaches the services. Yields a JobsClient with
    `log_path` and `address` set."""
    # os.environ too: the process must import the code under test (PYTHONPATH), like the stack's own
    proc = ServiceProcess("orchestrator", {**os.environ, **env, "LIKENESS_ORCHESTRATOR_DATABASE_URL": database_url},
                          log_path=folder / "orchestrator.log").wait_serving(120)
    client = JobsClient(proc.address)
    client.log_path, client.address = proc.log_path, proc.address
    try:
        yield client
    finally:
        client.close()
        proc.stop()


def log_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]


def retried(client, service: str) -> int:
    """How many times the client's orchestrator logged a retry of a call to `service`."""
    return sum(r.get("msg") == "retrying" and r.get("service") == service for r in log_records(client.log_path))


@pytest.fixture(scope="session")
def curate_baseline(rel_stack, rel_store, rel_demo):
    """(manifest bytes, dataset listing) of an uninterrupted curate run of the demo set into
    `faults/curate/`: what every faulted run must reproduce."""
    from likeness.api.v1 import orchestrator_pb2 as o

    uri, demo = rel_demo
    client = JobsClient(rel_stack.address("orchestrator"))
    try:
        job = client.follow(client.submit(demo_curate_spec(uri, demo, "faults/curate/")).job_id, quiet=True)
    finally:
        client.close()
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    return rel_store.get(job.manifest.uri), listing(rel_store, "faults/curate/")
