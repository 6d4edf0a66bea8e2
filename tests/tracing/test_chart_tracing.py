"""The chart turns tracing on (settings the services read), the dashboard's p95 panels ask for
exemplars, and the optional Grafana data sources link those exemplars to Tempo or Jaeger."""

from __future__ import annotations

import json

import pytest
import yaml

from likeness.core.settings import CommonSettings
from tests.deploy.tools import by_kind, helm_template, render


def config(*args) -> dict[str, str]:
    return by_kind(render(*args), "ConfigMap")["likeness-config"]["data"]


def test_the_chart_turns_tracing_on_with_settings_the_services_read(monkeypatch):
    data = config("--set", "tracing.endpoint=http://jaeger-collector.tracing:4317",
                  "--set-json", "tracing.sampleRatio=0.25")
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = CommonSettings()
    assert settings.tracing_enabled is True
    assert settings.tracing_endpoint == "http://jaeger-collector.tracing:4317"
    assert settings.tracing_sample_ratio == 0.25
    assert settings.tracing_keep_errors is True and settings.tracing_keep_slower_than_seconds == 5


def test_tracing_can_be_turned_off():
    data = config("--set", "tracing.enabled=false")
    assert data["LIKENESS_TRACING_ENABLED"] == "false"
    assert "LIKENESS_TRACING_ENDPOINT" not in data


def test_p95_panels_show_exemplars():
    cm = by_kind(render(), "ConfigMap")["likeness-dashboard"]
    dash = json.loads(cm["data"]["likeness.json"])
    targets = [t for p in dash["panels"] for t in p.get("targets", [])]
    with_exemplars = {t["expr"].split("(", 2)[2].split("{")[0].split("(")[-1] for t in targets if t.get("exemplar")}
    assert with_exemplars == {"likeness_rpc_duration_seconds_bucket", "likeness_stage_duration_seconds_bucket"}
    assert all(t["expr"].startswith("histogram_quantile(0.95") for t in targets if t.get("exemplar"))


@pytest.mark.parametrize("kind", ["tempo", "jaeger"])
def test_grafana_data_sources_link_exemplars_to_the_trace_store(kind):
    objects = render("--set", "dashboard.datasources.enabled=true",
                     "--set", f"dashboard.datasources.traces.type={kind}",
                     "--set", "dashboard.datasources.traces.uid=traces-1")
    cm = by_kind(objects, "ConfigMap")["likeness-grafana-datasources"]
    assert cm["metadata"]["labels"]["grafana_datasource"] == "1"
    sources = {s["uid"]: s for s in yaml.safe_load(cm["data"]["likeness-datasources.yaml"])["datasources"]}
    link = sources["likeness-prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert link == [{"name": "trace_id", "datasourceUid": "traces-1", "urlDisplayLabel": "Trace"}]
    assert sources["traces-1"]["type"] == kind


def test_no_data_sources_unless_asked():
    assert "likeness-grafana-datasources" not in by_kind(render(), "ConfigMap")


@pytest.mark.parametrize("override, message", [
    ("tracing.keepSlowerThanSeconds=-1", "keepSlowerThanSeconds"),
    ("tracing.endpoint=tempo:4317", "endpoint"),
    ("dashboard.datasources.traces.type=zipkin", "type"),
])
def test_values_schema_rejects_bad_tracing_values(override, message):
    with pytest.raises(RuntimeError, match=message):
        helm_template("--set", override)
