"""What the chart hands to the pods it does not render itself (the training runs' Jobs) and the
probe, disruption-budget and dashboard details a real cluster acts on."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml

from likeness.core.server import LIVENESS
from tests.deploy.pods import containers, run_job
from tests.deploy.tools import CHART, DASHBOARD, RULES, by_kind, render

GPU = ("-f", str(CHART / "values-gpu.yaml"))


def test_gpu_training_runs_get_the_gpu_and_the_deployment_does_not():
    objects = render(*GPU, "--set", "services.training.job.priorityClassName=batch-low")
    deps = by_kind(objects, "Deployment")
    training = containers(deps["likeness-training"])[0]
    assert "nvidia.com/gpu" not in training["resources"]["requests"]
    assert "nvidia.com/gpu" not in training["resources"]["limits"]
    assert "nodeSelector" not in deps["likeness-training"]["spec"]["template"]["spec"]

    job = run_job(objects)
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert c["resources"]["requests"]["cpu"] == "8" and c["resources"]["limits"]["memory"] == "48Gi"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert len(pod["tolerations"]) == 1, "the chart's GPU toleration is not repeated"
    assert pod["priorityClassName"] == "batch-low"
    # the model image of the chart, pulled as the chart says, under a token-less ServiceAccount
    assert c["image"] == containers(deps["likeness-generation"])[0]["image"]
    assert c["imagePullPolicy"] == "Always"
    sa = by_kind(objects, "ServiceAccount")[pod["serviceAccountName"]]
    assert sa["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"] is False
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)


def test_a_run_spec_overrides_the_chart_defaults():
    objects = render(*GPU)
    job = run_job(objects, kubernetes={"gpus": 4, "node_selector": {"pool": "h100"}, "memory": "96Gi",
                                       "tolerations": [{"key": "dedicated", "operator": "Equal",
                                                        "value": "training", "effect": "NoSchedule"}]})
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"memory": "96Gi", "nvidia.com/gpu": "4"}
    assert pod["nodeSelector"] == {"pool": "h100"}
    assert {t["key"] for t in pod["tolerations"]} == {"nvidia.com/gpu", "dedicated"}


def test_default_values_keep_runs_off_gpus_and_honour_a_deployment_gpu_without_jobs():
    objects = render("--set", "services.training.kubernetesJobs=true")
    pod = run_job(objects)["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in pod and "priorityClassName" not in pod
    in_pod = by_kind(render("--set", "services.training.gpus=1"), "Deployment")["likeness-training"]
    assert containers(in_pod)[0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    with_jobs = by_kind(render("--set", "services.training.gpus=1", "--set", "services.training.kubernetesJobs=true"),
                        "Deployment")["likeness-training"]
    assert "nvidia.com/gpu" not in containers(with_jobs)[0]["resources"]["limits"]


@pytest.mark.parametrize("values", [(), GPU])
def test_liveness_asks_its_own_health_name_readiness_the_server(values):
    for dep in by_kind(render(*values), "Deployment").values():
        if dep["metadata"]["name"] == "likeness-minio":
            continue
        c = containers(dep)[0]
        assert c["livenessProbe"]["grpc"]["service"] == LIVENESS, dep["metadata"]["name"]
        assert "service" not in c["readinessProbe"]["grpc"] and "service" not in c["startupProbe"]["grpc"]


@pytest.mark.parametrize(("sets", "expected"), [
    ((), {"maxUnavailable": 1}),
    (("--set", "services.generation.pdb.maxUnavailable=0"), {"maxUnavailable": 0}),
    (("--set", "services.generation.pdb.maxUnavailable=2"), {"maxUnavailable": 2}),
    (("--set", "services.generation.pdb.minAvailable=1"), {"minAvailable": 1}),
    (("--set", "services.generation.pdb.maxUnavailable=null"), {"maxUnavailable": 1}),  # key removed
])
def test_pdb_renders_what_the_values_say_zero_included(sets, expected):
    pdb = by_kind(render(*sets), "PodDisruptionBudget")["likeness-generation"]["spec"]
    assert {k: v for k, v in pdb.items() if k != "selector"} == expected


def test_dashboard_latency_quantiles_leave_out_the_streams_the_alert_leaves_out():
    rules = yaml.safe_load(RULES.read_text())
    alert = next(r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert")
                 and "rpc_duration_seconds:p95" in r["expr"])
    excluded = re.search(r'method!~"([^"]+)"', alert).group(0)
    quantiles = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])
                 if "histogram_quantile" in t["expr"] and "likeness_rpc_duration_seconds_bucket" in t["expr"]]
    assert len(quantiles) == 2, "p95 and p99 panels"
    for expr in quantiles:
        assert excluded.replace('"', '\\"') in json.dumps(expr), expr
