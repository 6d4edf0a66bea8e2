"""Every metric the dashboard, the rules and the HPA use is one the services really export: real
service processes are started and their /metrics scraped. Label names used in selectors,
`by (...)` clauses and legends must be labels of those metrics (or the scrape target's own)."""

from __future__ import annotations

import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.tools import DASHBOARD, RULES, by_kind, render
from tests.helpers import service_env, spawn_service, wait_for

# Light services (no torch model in warm-up); every process exports every family of core.metrics.
SCRAPED = {"restoration": ("likeness.v1.RestorationService", "RegionMask"),
           "detection": ("likeness.v1.DetectionService", "Detect")}
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}
# Labels Prometheus adds to every scraped series (job/instance) or the ServiceMonitor does (pod, namespace).
TARGET_LABELS = {"job", "instance", "namespace", "pod"}
NAME = re.compile(r"\b(likeness[_:][A-Za-z0-9_:]*)")


def _metrics_with_duration(port: int, method: str) -> str:
    """/metrics once it holds the call's duration. grpc.aio's `abort` sends the status before the
    handler's `finally` records the duration, so a client can see the error first (under load it
    does): poll briefly instead of reading once."""
    def scrape() -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return text if re.search(rf'likeness_rpc_duration_seconds_count{{[^}}]*method="{method}"', text) else None

    return wait_for(scrape, 5, what=f"a recorded duration for {method}")


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> dict[str, str]:
    """sample name -> metric type, from the /metrics of running services after one call each."""
    tmp = tmp_path_factory.mktemp("metrics")
    env = service_env(LIKENESS_STORE_URI=f"file://{tmp}/store", LIKENESS_MODEL_REPOSITORY=f"file://{tmp}/models",
                      LIKENESS_MODEL_CACHE_DIR=str(tmp / "cache"))
    with ThreadPoolExecutor(len(SCRAPED)) as pool:
        procs = list(pool.map(lambda name: spawn_service(name, env, tmp), SCRAPED))
    try:
        samples: dict[str, str] = {}
        for proc in procs:
            service, method = SCRAPED[proc.name]
            with grpc.insecure_channel(proc.address) as ch:  # any outcome is recorded; empty = INVALID_ARGUMENT
                call = ch.unary_unary(f"/{service}/{method}", request_serializer=lambda _: b"",
                                      response_deserializer=lambda b: b)
                with pytest.raises(grpc.RpcError) as refused:
                    call(None, timeout=10)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
            text = _metrics_with_duration(proc.metrics_port, method)
            for family in text_string_to_metric_families(text):
                if family.name.startswith("likeness_"):
                    for suffix in SUFFIXES.get(family.type, ("",)):
                        samples[family.name + suffix] = family.type
        return samples
    finally:
        for proc in procs:
            proc.stop()


def metric_labels() -> dict[str, set[str]]:
    """sample name -> label names, from the metric definitions in likeness.core.metrics."""
    from likeness.core import metrics

    out: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for suffix in SUFFIXES[obj._type]:
                out[obj._name + suffix] = set(obj._labelnames) | ({"le"} if suffix == "_bucket" else set())
    return out


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    shipped = by_kind(render(), "PrometheusRule")["likeness"]["spec"]["groups"]
    return [r["expr"] for g in groups + shipped for r in g["rules"]]


def recorded_names() -> dict[str, set[str]]:
    """Recording rule name -> labels it carries (its `by` labels plus static labels)."""
    out: dict[str, set[str]] = {}
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            if "record" in r:
                by = set().union(*(set(re.split(r"\s*,\s*",
                                                m.strip())) for m in re.findall(r"by \(([^)]*)\)", r["expr"])))
                out.setdefault(r["record"], set()).update(by | set(r.get("labels", {})))
    return out


def dashboard_targets() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(t["expr"], t.get("legendFormat", "")) for p in panels for t in p.get("targets", [])]


def hpa_metric_names() -> list[str]:
    hpa = by_kind(render(), "HorizontalPodAutoscaler")["likeness-generation"]
    return [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]


def used_names() -> set[str]:
    exprs = rule_expressions() + [e for e, _ in dashboard_targets()]
    names = {n for e in exprs for n in NAME.findall(e)}
    return names | set(hpa_metric_names())


def test_every_metric_used_is_exported(scraped):
    recorded = recorded_names()
    used = used_names()
    assert len(used) >= 15, sorted(used)
    raw = {n for n in used if ":" not in n}
    missing = sorted(raw - set(scraped))
    assert not missing, f"used by the chart but exported by no service: {missing}"
    assert not sorted(n for n in used if ":" in n and n not in recorded), "recording rule used but never recorded"
    # and the dashboard covers what the issue asks for
    for family in ("likeness_rpc_duration_seconds_bucket", "likeness_stage_duration_seconds_bucket",
                   "likeness_batch_size_bucket", "likeness_queue_depth", "likeness_gpu_memory_bytes"):
        assert any(family in e for e, _ in dashboard_targets()), family


def labels_in(expr: str) -> set[str]:
    selectors = re.findall(r"\{([^}]*)\}", expr)
    names = {m for s in selectors for m in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", s)}
    for clause in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        names |= {x.strip() for x in clause.split(",") if x.strip()}
    return names


def test_every_label_used_belongs_to_the_metrics_of_its_expression(scraped):
    known = metric_labels()
    recorded = recorded_names()
    exprs = [(e, "") for e in rule_expressions()] + dashboard_targets()
    for expr, legend in exprs:
        allowed = set(TARGET_LABELS)
        for name in NAME.findall(expr):
            allowed |= known.get(name, set()) | recorded.get(name, set())
        used = labels_in(expr) | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert used <= allowed, f"{sorted(used - allowed)} are not labels of the metrics in: {expr}"
