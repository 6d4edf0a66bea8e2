"""The Kubernetes Job executor: the manifest passes the Kubernetes schema (strict) for 1.30 and the
newest bundled version, and the real `kubernetes` client POSTs it to the API server."""

from __future__ import annotations

import uuid

import kubernetes_validate
import pytest

from likeness.core.errors import FailedPrecondition
from likeness.training.executors.kubernetes_job import KubernetesJobExecutor, job_manifest, job_name
from likeness.training.registry import RunRegistry
from likeness.training.registry.models import Base
from likeness.training.settings import TrainingSettings
from likeness.training.spec import KubernetesSpec
from tests.training.factories import resolved_spec
from tests.training.fake_kube import FakeApiServer, fake_api_client

VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


@pytest.fixture
def shared_registry(postgres_url):
    """Job pods write to the service's registry, so the executor insists on PostgreSQL."""
    reg = RunRegistry(postgres_url)
    with reg.engine.begin() as conn:  # a clean slate on the session's server
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    yield reg
    reg.close()


def gpu_run(registry, run_id="Run_ABC123"):
    run_id = f"{run_id}-{uuid.uuid4().hex[:8]}"
    spec = resolved_spec(run_id, executor="kubernetes_job", batch_size=2, kubernetes=KubernetesSpec(
        gpus=2, node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=({"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"},),
        memory="48Gi", cpu="8"))
    return registry.create_run(run_id, spec.to_dict(), executor="kubernetes_job")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("claim", ["", "model-cache"])
def test_manifest_is_valid_kubernetes_in_strict_mode(registry, version, claim):
    settings = TrainingSettings(training_model_cache_claim=claim, training_job_service_account="trainer")
    manifest = job_manifest(gpu_run(registry), settings)
    kubernetes_validate.validate(manifest, version, strict=True)  # raises on any unknown field


def test_manifest_carries_the_spec(registry):
    run = gpu_run(registry)
    m = job_manifest(run, TrainingSettings(training_job_secret="store-creds", training_job_database_secret="db",
                                           store_uri="s3://likeness"))
    pod = m["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert m["metadata"]["name"] == job_name(run.run_id) and len(m["metadata"]["name"]) <= 63
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2" and c["resources"]["limits"]["memory"] == "48Gi"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"} in pod["tolerations"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert env["LIKENESS_STORE_URI"] == "s3://likeness"
    # credentials only by reference to the chart's Secrets and keys, never as values
    assert refs == {"LIKENESS_S3_ACCESS_KEY": {"name": "store-creds", "key": "accessKey", "optional": True},
                    "LIKENESS_S3_SECRET_KEY": {"name": "store-creds", "key": "secretKey", "optional": True},
                    "LIKENESS_TRAINING_DATABASE_URL": {"name": "db", "key": "url"}}
    assert not any("SECRET" in name or "ACCESS_KEY" in name or "DATABASE" in name for name in env)
    assert c["command"][-2:] == ["--run-id", run.run_id]
    assert pod["restartPolicy"] == "Never" and c["securityContext"]["readOnlyRootFilesystem"]
    kubernetes_validate.validate(m, VERSIONS[-1], strict=True)


def test_typo_in_a_manifest_fails_strict_validation(registry):
    m = job_manifest(gpu_run(registry), TrainingSettings())
    m["spec"]["template"]["spec"]["nodeSelectr"] = {"a": "b"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(m, VERSIONS[-1], strict=True)


@pytest.fixture
def api_client():
    with fake_api_client() as client:
        yield client


@pytest.mark.postgres
def test_submit_creates_the_job_with_the_kubernetes_client(shared_registry, api_client):
    registry = shared_registry
    settings = TrainingSettings(training_namespace="ml")
    run = gpu_run(registry)
    KubernetesJobExecutor(registry, settings, api_client).submit(run)
    (path, body), = FakeApiServer.posted
    assert path == "/apis/batch/v1/namespaces/ml/jobs"
    assert body == job_manifest(run, settings)
    assert registry.get(run.run_id).external_id == job_name(run.run_id)


@pytest.mark.postgres
def test_reconcile_marks_a_run_whose_job_failed(shared_registry, api_client):
    registry = shared_registry
    settings = TrainingSettings()
    executor = KubernetesJobExecutor(registry, settings, api_client)
    run = gpu_run(registry)
    executor.submit(run)
    FakeApiServer.status_conditions = []
    assert executor.reconcile() == 0
    FakeApiServer.status_conditions = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                        "message": "Job has reached the specified backoff limit"}]
    assert executor.reconcile() == 1
    after = registry.get(run.run_id)
    assert after.state == "failed" and "BackoffLimitExceeded" in after.error


@pytest.mark.postgres
def test_cancelling_a_queued_run_deletes_its_job(shared_registry, api_client):
    registry = shared_registry
    settings = TrainingSettings(training_namespace="ml")
    executor = KubernetesJobExecutor(registry, settings, api_client)
    run = gpu_run(registry)
    executor.submit(run)
    cancelled = registry.request_cancel(run.run_id)
    assert cancelled.state == "cancelled"
    executor.cancel(cancelled)
    assert FakeApiServer.deleted == [
        f"/apis/batch/v1/namespaces/ml/jobs/{job_name(run.run_id)}?propagationPolicy=Background"]


def test_an_embedded_registry_cannot_feed_job_pods(registry, api_client):
    executor = KubernetesJobExecutor(registry, TrainingSettings(), api_client)
    with pytest.raises(FailedPrecondition, match="LIKENESS_TRAINING_DATABASE_URL on PostgreSQL"):
        executor.submit(gpu_run(registry))
    assert FakeApiServer.posted == []
