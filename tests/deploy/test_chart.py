"""The Helm chart renders with the default and the GPU values, every object validates against the
Kubernetes schemas (strict), and the rendered workloads have the shape the issue asks for."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.tools import CHART, SERVICES, binary, by_kind, helm_template, render

VALUES = {"default": (), "gpu": ("-f", str(CHART / "values-gpu.yaml"))}
# Custom resources of the Prometheus Operator: no schema ships with kubernetes-validate. Their
# content is checked below (ServiceMonitor) and by promtool (PrometheusRule, test_rules.py).
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def newest_kubernetes() -> str:
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions = [tuple(int(x) for x in m.groups()) for d in root.iterdir()
                if (m := re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local-strict", d.name))]
    return ".".join(map(str, max(versions)))


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(*VALUES[request.param])


@pytest.mark.parametrize("version", ["1.30.0", newest_kubernetes()])
def test_every_object_validates_strictly(rendered, version):
    name, objects = rendered
    checked = 0
    for obj in objects:
        if obj["kind"] in OPERATOR_KINDS:
            continue
        ident = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{ident} invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 30, f"only {checked} objects rendered"


def containers(dep: dict) -> list[dict]:
    return dep["spec"]["template"]["spec"]["containers"]


def test_each_service_has_deployment_headless_service_account_and_pdb(rendered):
    _, objects = rendered
    deps, svcs = by_kind(objects, "Deployment"), by_kind(objects, "Service")
    sas, pdbs = by_kind(objects, "ServiceAccount"), by_kind(objects, "PodDisruptionBudget")
    for name in SERVICES:
        dep = deps[f"likeness-{name}"]
        pod = dep["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in sas
        assert containers(dep)[0]["args"] == ["serve", name]
        svc = svcs[f"likeness-{name}-headless"]
        assert svc["spec"]["clusterIP"] == "None", "gRPC round_robin needs one DNS record per pod"
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
        pdb = pdbs[f"likeness-{name}"]
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_pods_are_hardened_with_grpc_probes_and_resources(rendered):
    _, objects = rendered
    for dep in by_kind(objects, "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in containers(dep):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (dep["metadata"]["name"], kind)
            if dep["metadata"]["name"].endswith("minio"):
                continue
            grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
            for probe in ("startupProbe", "readinessProbe"):
                assert c[probe]["grpc"] == {"port": grpc_port}, (dep["metadata"]["name"], probe)
            assert c["livenessProbe"]["grpc"] == {"port": grpc_port, "service": "liveness"}
            # every writable path is a volume: scratch and the model cache
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/tmp" in mounts and "/var/cache/likeness/models" in mounts


def test_startup_probe_allows_model_warm_up():
    for name, args in VALUES.items():
        deps = by_kind(render(*args), "Deployment")
        probe = containers(deps["likeness-generation"])[0]["startupProbe"]
        window = probe["periodSeconds"] * probe["failureThreshold"]
        assert window >= (1200 if name == "gpu" else 600), f"{name}: generation gets only {window}s to warm up"


def test_gpu_values_put_model_services_on_gpu_nodes():
    deps = by_kind(render(*VALUES["gpu"]), "Deployment")
    for name in ("detection", "generation", "embedding", "restoration"):
        dep = deps[f"likeness-{name}"]
        pod, c = dep["spec"]["template"]["spec"], containers(dep)[0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert "likeness-gpu" in c["image"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    orch = containers(deps["likeness-orchestrator"])[0]
    assert "nvidia.com/gpu" not in orch["resources"]["limits"] and "likeness-gpu" not in orch["image"]
    # training runs go to Kubernetes Jobs, which hold the GPU (test_training_jobs_and_probes.py)
    assert "nvidia.com/gpu" not in containers(deps["likeness-training"])[0]["resources"]["limits"]
    # default values: no GPU anywhere; the slim image for the orchestrator, the model image (it
    # runs on the CPU too) for the model services
    deps = by_kind(render(), "Deployment")
    for dep in deps.values():
        assert "nvidia.com/gpu" not in containers(dep)[0]["resources"]["limits"]
        assert "nodeSelector" not in dep["spec"]["template"]["spec"]
    assert containers(deps["likeness-orchestrator"])[0]["image"] == "ghcr.io/likeness/likeness:0.1.0"
    assert containers(deps["likeness-generation"])[0]["image"] == "ghcr.io/likeness/likeness-gpu:0.1.0"


def env_of(dep: dict, objects: list[dict]) -> dict[str, object]:
    c = containers(dep)[0]
    env: dict[str, object] = {}
    for src in c.get("envFrom", []):
        env.update(by_kind(objects, "ConfigMap")[src["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]})
    return env


def settings_class(service: str):
    """The service's settings class (CommonSettings while that service's module is not there)."""
    from likeness.core.settings import CommonSettings

    try:
        module = importlib.import_module(f"likeness.{service}.settings")
    except ModuleNotFoundError:
        return CommonSettings
    found = [c for _, c in inspect.getmembers(module, inspect.isclass)
             if issubclass(c, CommonSettings) and c is not CommonSettings and c.__module__ == module.__name__]
    return found[0] if found else CommonSettings


def test_every_likeness_variable_is_a_setting_the_service_reads(rendered):
    """A typo in a LIKENESS_* name would be silently ignored (extra="ignore"): catch it here."""
    _, objects = rendered
    for name in SERVICES:
        env = env_of(by_kind(objects, "Deployment")[f"likeness-{name}"], objects)
        cls = settings_class(name)
        fields = {f"LIKENESS_{f.upper()}" for f in cls.model_fields}
        prefix = f"LIKENESS_{name.upper()}_"
        unknown = sorted(k for k in env if k.startswith("LIKENESS_") and k not in fields
                         and (cls.__name__ != "CommonSettings" or not k.startswith(prefix)))
        assert not unknown, f"{name} ({cls.__name__}) does not read {unknown}"
        # and the service accepts the values (patterns, ranges); secrets are references here
        given = {k[len("LIKENESS_"):].lower(): v for k, v in env.items()
                 if k.startswith("LIKENESS_") and isinstance(v, str)}
        cls.model_validate({k: v for k, v in given.items() if k in cls.model_fields})
        assert env["LIKENESS_HOST"] == "0.0.0.0"
        assert env["LIKENESS_S3_SECRET_KEY"]["secretKeyRef"]["key"] == "secretKey"


def test_orchestrator_reaches_services_through_headless_dns(rendered):
    _, objects = rendered
    env = env_of(by_kind(objects, "Deployment")["likeness-orchestrator"], objects)
    ports = {"detection": 50051, "generation": 50052, "embedding": 50053, "restoration": 50054, "training": 50055}
    for service, port in ports.items():
        assert env[f"LIKENESS_ORCHESTRATOR_{service.upper()}_ADDRESS"] == f"dns:///likeness-{service}-headless:{port}"


def test_model_services_age_connections_so_new_replicas_get_calls(rendered):
    """Without a maximum connection age a replica added behind a headless Service waits for a
    connection to break before any client calls it (tests/core/test_replicas.py shows both)."""
    _, objects = rendered
    for name in SERVICES:
        env = env_of(by_kind(objects, "Deployment")[f"likeness-{name}"], objects)
        age = float(env.get("LIKENESS_MAX_CONNECTION_AGE_SECONDS", 0))
        if name in ("detection", "generation", "embedding", "restoration"):
            assert 0 < age <= 60 and float(env["LIKENESS_MAX_CONNECTION_AGE_GRACE_SECONDS"]) >= 600
        else:  # streams (Watch, WatchRun) would be cut: orchestrator and training keep connections
            assert age == 0, name


def test_gpu_values_use_postgresql_from_a_secret():
    objects = render(*VALUES["gpu"])
    deps = by_kind(objects, "Deployment")
    for name in ("orchestrator", "training"):
        ref = env_of(deps[f"likeness-{name}"], objects)[f"LIKENESS_{name.upper()}_DATABASE_URL"]
        assert ref == {"secretKeyRef": {"name": "likeness-database", "key": "url"}}
    assert deps["likeness-orchestrator"]["spec"]["replicas"] == 2
    # without a database the job store is the pod's SQLite file: one replica only
    one = by_kind(render("--set", "services.orchestrator.replicas=3"), "Deployment")["likeness-orchestrator"]
    assert one["spec"]["replicas"] == 1


def test_generation_autoscales_on_in_flight_calls_with_cpu_fallback(rendered):
    _, objects = rendered
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["likeness-generation"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "likeness-generation"
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "likeness_rpc_in_flight"
    assert metrics["Pods"]["pods"]["metric"]["selector"]["matchLabels"] == {"service": "GenerationService"}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert "replicas" not in by_kind(objects, "Deployment")["likeness-generation"]["spec"], "the HPA owns replicas"


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_network_policies_cover_every_pod_and_open_only_what_is_used(rendered):
    _, objects = rendered
    policies = list(by_kind(objects, "NetworkPolicy").values())
    deps = by_kind(objects, "Deployment")
    for dep in deps.values():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert any(selects(p["spec"]["podSelector"], labels) for p in policies), dep["metadata"]["name"]
    gen = by_kind(objects, "NetworkPolicy")["likeness-generation"]["spec"]["ingress"]
    grpc_rule = next(r for r in gen if r["ports"][0]["port"] == "grpc")
    orch_labels = deps["likeness-orchestrator"]["spec"]["template"]["metadata"]["labels"]
    train_labels = deps["likeness-training"]["spec"]["template"]["metadata"]["labels"]
    assert any(selects(peer["podSelector"], orch_labels) for peer in grpc_rule["from"])
    assert not any(selects(peer["podSelector"], train_labels) for peer in grpc_rule["from"])


def test_service_monitor_keeps_the_metrics_service_label(rendered):
    _, objects = rendered
    sm = by_kind(objects, "ServiceMonitor")["likeness"]
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s", "honorLabels": True}]
    for name in SERVICES:
        svc = by_kind(objects, "Service")[f"likeness-{name}-headless"]
        assert selects(sm["spec"]["selector"], svc["metadata"]["labels"])
        assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}


def test_dashboard_config_map_carries_the_dashboard():
    cm = by_kind(render(), "ConfigMap")["likeness-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["likeness.json"])
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for word in ("p95", "p99", "throughput", "errors", "batch", "queue", "gpu memory", "stage"):
        assert word in titles


def test_helm_lint_passes():
    for args in VALUES.values():
        result = subprocess.run([binary("helm"), "lint", str(CHART), "--strict", *args], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_config_change_rolls_the_pods():
    def checksum(*args):
        dep = by_kind(render(*args), "Deployment")["likeness-detection"]
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() != checksum("--set", "common.logLevel=DEBUG")


@pytest.mark.parametrize("override, message", [
    ("services.generation.port=80", "services.generation.port"),
    ("services.generaton.port=50052", "generaton"),
    ("securityContext.readOnlyRootFilesystem=false", "readOnlyRootFilesystem"),
    ("prometheusRule.slo.rpcErrorRatio=2", "rpcErrorRatio"),
    ("image.pullPolicy=Sometimes", "pullPolicy"),
])
def test_values_schema_rejects_bad_values(override, message):
    with pytest.raises(RuntimeError, match=message):
        helm_template("--set", override)


def test_rendering_is_deterministic_without_generated_secrets():
    args = ("--set", "store.existingSecret=s3-keys")
    assert helm_template(*args) == helm_template(*args)
    assert not any(o["kind"] == "Secret" for o in yaml.safe_load_all(helm_template(*args)) if o)


def test_service_auth_turns_on_for_every_service_at_once():
    objects = render("--set", "serviceAuth.token=t0ken", "--set", "serviceAuth.exempt=health\\,reflection")
    secret = by_kind(objects, "Secret")["likeness-service-auth"]
    for name in SERVICES:
        env = env_of(by_kind(objects, "Deployment")[f"likeness-{name}"], objects)
        assert env["LIKENESS_AUTH_TOKEN"] == {"secretKeyRef": {"name": "likeness-service-auth", "key": "token"}}
        assert env["LIKENESS_AUTH_EXEMPT"] == "health,reflection"
        settings_class(name).model_validate({"auth_exempt": env["LIKENESS_AUTH_EXEMPT"]})
    assert secret["data"]["token"] == "dDBrZW4="
    # metrics not exempt: Prometheus sends the token
    endpoint = by_kind(objects, "ServiceMonitor")["likeness"]["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer",
                                         "credentials": {"name": "likeness-service-auth", "key": "token"}}
    off = render()
    assert "LIKENESS_AUTH_TOKEN" not in env_of(by_kind(off, "Deployment")["likeness-detection"], off)
    with pytest.raises(RuntimeError, match="exempt"):
        helm_template("--set", "serviceAuth.exempt=everything")
