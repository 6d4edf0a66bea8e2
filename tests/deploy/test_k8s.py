"""k8s/ (the kustomize entry for users without Helm) is the chart rendered by tools/render_k8s.py:
it must not drift from the chart, and kustomize must build it into valid objects."""

from __future__ import annotations

import subprocess
import sys

import kubernetes_validate
import yaml

from tests.deploy.tools import ROOT, binary


def test_k8s_is_in_sync_with_the_chart():
    result = subprocess.run([sys.executable, "tools/render_k8s.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def kustomize(path: str) -> list[dict]:
    result = subprocess.run([binary("kubectl"), "kustomize", str(ROOT / path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_kustomize_builds_valid_objects_in_one_namespace():
    objects = kustomize("k8s")
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "Secret"}, "no CRDs or secrets in the base"
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "likeness", obj["metadata"]["name"]
    monitoring = kustomize("k8s/monitoring")
    assert {o["kind"] for o in monitoring} == {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
