"""A training run started as a Kubernetes Job joins the trace of the call that started it: the Job
gets TRACEPARENT (and the tracing settings), and the pod's entry point opens its span under it."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id

from likeness.core import tracing
from likeness.core.settings import CommonSettings
from likeness.training.executors.kubernetes_job import job_manifest
from likeness.training.registry import RunRegistry
from likeness.training.settings import TrainingSettings
from tests.training.factories import resolved_spec


@pytest.fixture
def registry(tmp_path):
    reg = RunRegistry(f"sqlite:///{tmp_path}/runs.db")
    yield reg
    reg.close()


@pytest.fixture
def exported():
    spans = InMemorySpanExporter()
    tracing.configure("training", CommonSettings(tracing_enabled=True, tracing_sample_ratio=1.0), exporter=spans)
    yield spans
    tracing.shutdown()


def gpu_run(registry):
    spec = resolved_spec("traced-run", executor="kubernetes_job", batch_size=2)
    return registry.create_run("traced-run", spec.to_dict(), executor="kubernetes_job")


def env_of(manifest) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_job_carries_the_callers_trace_and_the_tracing_settings(registry, exported):
    settings = TrainingSettings(tracing_enabled=True, tracing_endpoint="http://tempo.monitoring:4317")
    with tracing.span_under("StartRun", ""):
        trace_id = tracing.current_trace_id()
        env = env_of(job_manifest(gpu_run(registry), settings))
    assert env["TRACEPARENT"].split("-")[1] == trace_id
    assert env["LIKENESS_TRACING_ENABLED"] == "True"
    assert env["LIKENESS_TRACING_ENDPOINT"] == "http://tempo.monitoring:4317"


def test_no_traceparent_outside_a_trace(registry):
    assert "TRACEPARENT" not in env_of(job_manifest(gpu_run(registry), TrainingSettings()))


def test_the_pods_span_joins_that_trace(exported, monkeypatch):
    with tracing.span_under("StartRun", ""):
        parent = tracing.traceparent()
    monkeypatch.setenv("TRACEPARENT", parent)
    with tracing.start_from_environment("training run", {"run.id": "r1"}):
        pass
    tracing.flush()
    run = next(s for s in exported.get_finished_spans() if s.name == "training run")
    assert format_trace_id(run.context.trace_id) == parent.split("-")[1]
    assert run.parent.span_id == int(parent.split("-")[2], 16)
