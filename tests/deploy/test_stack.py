"""`make up` starts the production-like local stack (SeaweedFS, PostgreSQL, services, Prometheus);
a job submitted through the orchestrator runs on it, Prometheus' HTTP API answers a p95 for that
job's calls, and `make down` leaves no process behind.

`make` is called with `-o venv -o sysdeps`: `make test` has just made both, and a test must not
reinstall the environment under the running suite."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from tests.deploy.tools import CHART, DASHBOARD, ROOT
from tests.helpers import wait_for

# What a curate job over imported photos calls: detection (Assess) and embedding (EmbedImages,
# Select); no generation, so the stack stays light. `make up` alone starts all six services.
STACK_SERVICES = "detection,embedding,orchestrator"
JOB_CALLS = {("DetectionService", "Assess"), ("EmbeddingService", "EmbedImages"), ("EmbeddingService", "Select")}


def make(target: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-o", "venv", "-o", "sysdeps", target], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def prometheus_query(base: str, query: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def upload_faces(state: dict) -> str:
    """Two real portraits into the stack's S3 store; returns the import prefix URI."""
    from minio import Minio

    from likeness.core.images import encode_png
    from tests.photos import skimage_photo, tom_hanks

    env = json.loads((Path(state["dir"]) / "env.json").read_text())["orchestrator"]
    client = Minio(state["s3"], env["LIKENESS_S3_ACCESS_KEY"], env["LIKENESS_S3_SECRET_KEY"], secure=False)
    for name, pixels in (("astronaut", skimage_photo("astronaut")), ("hanks", tom_hanks())):
        data = encode_png(pixels)
        client.put_object("likeness", f"imports/faces/{name}.png", io.BytesIO(data), len(data),
                          content_type="image/png")
    return "s3://likeness/imports/faces"


def submit_orchestrator_job(state: dict) -> dict:
    """The job the test measures: a curate job over imported photos, submitted through the
    orchestrator's public API and watched until it ends. Returns its summary."""
    from likeness.api.v1 import orchestrator_pb2 as pb
    from likeness.api.v1 import orchestrator_pb2_grpc as pb_grpc

    source = upload_faces(state)
    spec = pb.JobSpec(curate=pb.CurateSpec(import_source=pb.ImportSource(uri=source), target_count=1))
    with grpc.insecure_channel(f"127.0.0.1:{state['ports']['orchestrator']}") as channel:
        stub = pb_grpc.OrchestratorServiceStub(channel)
        job = stub.Submit(pb.SubmitRequest(spec=spec, idempotency_key="stack-test"), timeout=30).job
        done = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
        job = wait_for(lambda: (j := stub.Get(pb.GetRequest(job_id=job.job_id), timeout=10).job).state in done and j,
                       timeout=120, interval=0.5, what="the curate job to end")
    assert job.state == pb.JOB_STATE_SUCCEEDED, f"{pb.JobState.Name(job.state)}: {job.error}"
    return dict(job.summary)


def dashboard_queries() -> list[str]:
    """The dashboard's queries as Grafana would send them with every variable at "All"."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    return [e.replace("$namespace", ".*").replace("$service", ".*").replace("$__rate_interval", "1m")
            for e in exprs]


def live_processes(marker: str) -> list[str]:
    """Command lines of running processes that mention `marker` (the stack's state folder or a
    port of its own), zombies excluded."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            found.append(f"{proc.name}: {cmd[:200]}")
    return found


@pytest.mark.slow
def test_make_up_runs_a_job_that_prometheus_measures_and_make_down_cleans_up():
    state_dir = Path(tempfile.mkdtemp(prefix="likeness-stack-"))
    env = {**os.environ, "LIKENESS_STACK_DIR": str(state_dir), "LIKENESS_STACK_SERVICES": STACK_SERVICES,
           "LIKENESS_STACK_PORTS": "auto", "HF_HUB_OFFLINE": "1"}
    up = make("up", env, timeout=300)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        state = json.loads((state_dir / "stack.json").read_text())
        for secret_file in ("stack.json", "env.json"):  # they hold the S3 secret and the database URL
            assert (state_dir / secret_file).stat().st_mode & 0o777 == 0o600, secret_file
        summary = submit_orchestrator_job(state)
        assert int(summary["candidates"]) == 2 and int(summary["selected"]) == 1, summary

        # p95 over the job's calls from the cumulative histograms Prometheus scraped. (A rate()
        # over one job would be empty: a series born at its first call has no earlier sample.)
        query = ('histogram_quantile(0.95, sum by (service, method, le) '
                 '(likeness_rpc_duration_seconds_bucket{service=~"DetectionService|EmbeddingService", code="OK"}))')

        def p95s():
            got = {(r["metric"]["service"], r["metric"]["method"]): float(r["value"][1])
                   for r in prometheus_query(state["prometheus"], query)}
            return got if JOB_CALLS <= set(got) else None

        p95 = wait_for(p95s, timeout=30, interval=0.5, what="Prometheus to scrape the job's calls")
        for call in JOB_CALLS:
            assert math.isfinite(p95[call]) and 0 < p95[call] <= 60, (call, p95[call])
        # and the orchestrator's per-stage histogram of the same job (scraped on its own schedule)
        def stages():  # a scrape may land mid-job: wait until every stage of the finished job is there
            found = {r["metric"]["stage"] for r in prometheus_query(
                state["prometheus"], 'likeness_stage_duration_seconds_count{job_kind="curate"}')}
            return found if {"source", "validate", "cluster", "select", "write"} <= found else None

        wait_for(stages, timeout=30, interval=0.5, what="the curate job's stage durations in Prometheus")
        # Prometheus also evaluates the chart's rules (the SLO series are there at once)
        wait_for(lambda: prometheus_query(state["prometheus"], "likeness:slo_rpc_p95_seconds"), timeout=30,
                 interval=0.5, what="Prometheus to evaluate the chart's recording rules")
        # every dashboard query is valid PromQL for this Prometheus (a parse error fails the call)
        for expr in dashboard_queries():
            prometheus_query(state["prometheus"], expr)
        # the query Prometheus Adapter sends for the generation HPA, as it would expand it
        rule = yaml.safe_load((CHART / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"][0]
        adapter = (rule["metricsQuery"].replace("<<.Series>>", rule["name"]["as"])
                   .replace("<<.LabelMatchers>>", 'service="EmbeddingService",namespace="local"')
                   .replace("<<.GroupBy>>", "pod"))
        in_flight = prometheus_query(state["prometheus"], adapter)
        assert [r["metric"] for r in in_flight] == [{"pod": "likeness-embedding-local"}], in_flight
    finally:
        started = {f.stem: json.loads(f.read_text()) for f in (state_dir / "pids").glob("*.pid")}
        down = make("down", env, timeout=180)
    assert down.returncode == 0 and "nothing left running" in down.stdout, down.stdout + down.stderr
    assert {"detection", "embedding", "orchestrator", "prometheus", "seaweed", "postgres"} <= set(started)
    for name, info in started.items():
        if "pid" in info:
            assert not still_running(info["pid"], info["cmd"]), f"{name} (pid {info['pid']}) survived make down"
    # weed, prometheus and postgres name the state folder on their command lines
    assert not live_processes(str(state_dir)), live_processes(str(state_dir))
    assert not list((state_dir / "pids").glob("*.pid")), "make down left pid files"
    subprocess.run(["rm", "-rf", str(state_dir)], check=False)


def still_running(pid: int, cmd: list[str]) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
    return not zombie and cmdline[: len(cmd)] == [c.encode() for c in cmd]


def test_state_files_with_secrets_are_written_owner_only(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("stack_tool", Path(__file__).resolve().parents[2] / "tools/stack.py")
    stack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stack)
    path = tmp_path / "env.json"
    path.write_text("{}")
    path.chmod(0o644)  # an older state file: rewritten private too
    stack.write_private(path, '{"LIKENESS_S3_SECRET_KEY": "s"}')
    assert path.stat().st_mode & 0o777 == 0o600 and "SECRET" in path.read_text()
