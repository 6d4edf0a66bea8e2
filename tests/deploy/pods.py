"""The pods a release runs, as the NetworkPolicies see them: the chart's Deployments and Jobs, plus the
training runs' Job pods, built by the training service's own `job_manifest` from the settings the
chart renders into the training Deployment."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from likeness.training.executors.kubernetes_job import job_manifest
from likeness.training.settings import TrainingSettings
from tests.deploy.tools import NAMESPACE, by_kind


@dataclass(frozen=True)
class Pod:
    name: str
    labels: dict
    namespace: str = NAMESPACE
    ports: tuple[tuple[str, int], ...] = ()  # (name, containerPort)


def containers(workload: dict) -> list[dict]:
    return workload["spec"]["template"]["spec"]["containers"]


def rendered_env(deployment: dict, objects: list[dict]) -> dict[str, str]:
    """The plain-value environment of a Deployment's first container (ConfigMap first, then env)."""
    c = containers(deployment)[0]
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        env.update(by_kind(objects, "ConfigMap")[src["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in c["env"] if "value" in e})
    return env


def training_settings(objects: list[dict]) -> TrainingSettings:
    """The TrainingSettings the training pod of this rendering would read from its environment."""
    env = rendered_env(by_kind(objects, "Deployment")["likeness-training"], objects)
    fields = TrainingSettings.model_fields
    given = {k[len("LIKENESS_"):].lower(): v for k, v in env.items() if k.startswith("LIKENESS_")}
    return TrainingSettings.model_validate({k: v for k, v in given.items() if k in fields})


def run_job(objects: list[dict], run_id: str = "run-1", kubernetes: dict | None = None) -> dict:
    """The Job the training service would create for a run whose spec leaves scheduling unset."""
    # job_manifest reads only these three fields of a RunRecord
    run = SimpleNamespace(run_id=run_id, name="a run", spec={"kubernetes": kubernetes or {}})
    return job_manifest(run, training_settings(objects))


def pods(objects: list[dict], *, with_runs: bool) -> list[Pod]:
    found = []
    for workload in [*by_kind(objects, "Deployment").values(), *by_kind(objects, "Job").values(),
                     *([run_job(objects)] if with_runs else [])]:
        ports = tuple((p.get("name", ""), p["containerPort"]) for c in containers(workload)
                      for p in c.get("ports", []))
        found.append(Pod(workload["metadata"]["name"], workload["spec"]["template"]["metadata"]["labels"],
                         ports=ports))
    return found
