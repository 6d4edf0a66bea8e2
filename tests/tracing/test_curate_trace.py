"""One curate job, traced end to end: the orchestrator, detection and embedding services run as real
processes with tracing on, exporting over OTLP/gRPC to an in-process receiver."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from likeness.api.v1 import orchestrator_pb2
from likeness.client.jobs_client import JobsClient
from likeness.client.local import LocalStack
from likeness.core.settings import CommonSettings
from likeness.core.store import open_store
from tests.e2e.conftest import FAST_LEASES, _free_block
from tests.helpers import free_port
from tests.photos import skimage_photo, tom_hanks
from tests.tracing.otlp_receiver import OtlpReceiver

SERVICES = ("detection", "embedding", "orchestrator")
EXEMPLAR = re.compile(r'^likeness_rpc_duration_seconds_bucket\{(?P<labels>[^}]*)\} \S+ '
                      r'# \{trace_id="(?P<trace>[0-9a-f]{32})"\}', re.M)

pytestmark = pytest.mark.slow


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def receiver():
    r = OtlpReceiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def traced_stack(receiver, tmp_path_factory):
    env = {**FAST_LEASES, "LIKENESS_TRACING_ENABLED": "true", "LIKENESS_TRACING_ENDPOINT": receiver.endpoint,
           "LIKENESS_TRACING_SAMPLE_RATIO": "1.0", "LIKENESS_LOG_CALLS": "all",
           "OTEL_BSP_SCHEDULE_DELAY": "200"}  # export every 0.2 s instead of 5 s: the test waits less
    stack = LocalStack(tmp_path_factory.mktemp("traced"), services=SERVICES, base_port=_free_block(), extra_env=env)
    try:
        stack.up(timeout=300)
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def curate_job(traced_stack):
    """A finished curate job over three real portraits and one photo without a face."""
    store = open_store(CommonSettings(store_uri=traced_stack.env["LIKENESS_STORE_URI"]))
    astronaut = skimage_photo("astronaut")
    photos = {"astronaut": astronaut, "astronaut-mirrored": astronaut[:, ::-1].copy(), "hanks": tom_hanks(),
              "coffee": skimage_photo("coffee")}
    for name, pixels in photos.items():
        store.put(f"traced-candidates/{name}.png", _png(pixels), "image/png")
    spec = orchestrator_pb2.JobSpec(curate=orchestrator_pb2.CurateSpec(
        import_source=orchestrator_pb2.ImportSource(uri=store.uri("traced-candidates/")), target_count=2,
        min_quality=0.0, output_prefix="datasets/traced/", seed=0))
    client = JobsClient(traced_stack.address("orchestrator"))
    try:
        job = client.follow(client.submit(spec).job_id, quiet=True)
        events = list(client.events(job.job_id))
    finally:
        client.close()
    assert job.state == orchestrator_pb2.JOB_STATE_SUCCEEDED, job.error
    return job, events


def test_a_curate_job_is_one_trace_across_the_services(receiver, curate_job):
    job, events = curate_job
    assert re.fullmatch(r"[0-9a-f]{32}", job.trace_id)
    assert {e.trace_id for e in events} == {job.trace_id}, "every job event names the job's trace"

    def complete(spans) -> bool:
        mine = [s for s in spans if s.trace_id == job.trace_id]
        ids = {s.span_id for s in mine}
        # a process exports a call's child spans before the call's own SERVER span (which ends last),
        # so wait until the parents have arrived too; an orphan that never gets one fails the wait
        return {"likeness-orchestrator", "likeness-detection", "likeness-embedding"} <= {s.service for s in mine} \
            and any(s.name == "job curate" for s in mine) and all(not s.parent_id or s.parent_id in ids for s in mine)

    receiver.wait_for(complete)
    spans = receiver.spans(job.trace_id)
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_id]
    assert [r.name for r in roots] == ["/likeness.v1.OrchestratorService/Submit"], "one root: the Submit call"
    orphans = [(s.service, s.name) for s in spans if s.parent_id and s.parent_id not in by_id]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"

    def service_of_parent(s):
        return by_id[s.parent_id].service if s.parent_id else ""

    names = {(s.service, s.name) for s in spans}
    for stage in ("stage source", "stage validate", "stage select", "stage write"):
        assert ("likeness-orchestrator", stage) in names, stage
    assert ("likeness-orchestrator", "work assess") in names and ("likeness-orchestrator", "work embed") in names
    assert ("likeness-orchestrator", "store.put") in names, "the dataset writes"
    # the model services' server spans hang under the orchestrator's client spans
    assess = [s for s in spans if s.service == "likeness-detection" and s.name.endswith("DetectionService/Assess")]
    embed = [s for s in spans if s.service == "likeness-embedding" and s.name.endswith("EmbeddingService/EmbedImages")]
    assert assess and embed
    assert {service_of_parent(s) for s in assess + embed} == {"likeness-orchestrator"}
    # store reads, decoding and the model worker inside the model services' calls
    for service in ("likeness-detection", "likeness-embedding"):
        for child in ("image.load", "store.get", "image.decode", "model.run"):
            assert (service, child) in names, (service, child)
    assert all(s.attributes["model.wait_ms"] >= 0 for s in spans if s.name == "model.run")
    store_gets = [s for s in spans if s.service == "likeness-detection" and s.name == "store.get"]
    assert all(by_id[s.parent_id].name == "image.load" for s in store_gets)
    assert any(s.attributes.get("store.key", "").endswith("astronaut.png") for s in store_gets)


def test_logs_name_the_trace(traced_stack, curate_job, receiver):
    job, _ = curate_job
    lines = [json.loads(line) for line in (traced_stack.state / "logs" / "detection.log").read_text().splitlines()
             if line.startswith("{")]
    assess = [rec for rec in lines if rec.get("msg") == "rpc" and rec.get("method") == "DetectionService/Assess"]
    assert assess and {rec.get("trace_id") for rec in assess} == {job.trace_id}
    span_ids = {s.span_id for s in receiver.spans(job.trace_id)}
    assert all(rec["span_id"] in span_ids for rec in assess), "each log line names a span of the trace"


def test_openmetrics_scrape_shows_an_exemplar_of_the_trace(traced_stack, curate_job, receiver):
    job, _ = curate_job
    port = traced_stack.ports["detection"] + 1000
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        text = resp.read().decode()
    exemplars = [m for m in EXEMPLAR.finditer(text) if 'method="Assess"' in m["labels"]]
    assert exemplars, "no exemplar on the Assess latency buckets"
    traced = {s.trace_id for s in receiver.spans()}
    assert {m["trace"] for m in exemplars} == {job.trace_id}
    assert job.trace_id in traced


def test_prometheus_with_exemplar_storage_keeps_the_trace_id(traced_stack, curate_job, tmp_path):
    """A real Prometheus, scraping as the chart's ServiceMonitor does (honor_labels) with the
    exemplar-storage feature the docs ask for, answers the job's trace id from its exemplar API."""
    job, _ = curate_job
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (tools/install_sysdeps.sh installs it)")
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": [{
        "job_name": "likeness", "honor_labels": True,
        "static_configs": [{"targets": [f"127.0.0.1:{traced_stack.ports['detection'] + 1000}"]}]}]}))
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = urllib.parse.urlencode({"query": 'likeness_rpc_duration_seconds_bucket{method="Assess"}',
                                    "start": time.time() - 3600, "end": time.time() + 3600})
    found: set[str] = set()
    try:
        deadline = time.monotonic() + 60
        while not found and time.monotonic() < deadline:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query_exemplars?{query}", timeout=5) as r:
                    series = json.load(r)["data"]
            except OSError:
                continue  # not listening yet
            found = {e["labels"]["trace_id"] for s in series for e in s["exemplars"]}
    finally:
        proc.terminate()
        proc.wait(30)
    assert found == {job.trace_id}
