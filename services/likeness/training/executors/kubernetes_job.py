"""Runs a training run as a Kubernetes Job created with the `kubernetes` client.

The Job's pod runs `python -m likeness.training.job --run-id ID`: the same training loop as the
in-process executor, writing progress, checkpoints and the final state to the same registry
(PostgreSQL in a cluster) and store, so WatchRun/GetRun/CancelRun work the same either way:
- cancel: the service sets the run's cancel flag; the pod's loop sees it at its next step;
- a pod that dies (node drain, OOM) is retried by the Job (`backoffLimit`), and the retry resumes
  from the run's last saved state, so a retry costs only the steps since that state;
- `reconcile` marks a run FAILED when its Job failed without the pod recording why.

The manifest is built from the run spec (GPUs, node selector, tolerations, image, memory, CPU);
what the spec leaves unset comes from the service settings, which the chart renders from
services.training.job (GPUs, resources, node selector, tolerations, priority class, image) together
with the store, model repository, the Secrets holding the store keys and the registry URL, the
model cache volume and the release labels the NetworkPolicies select Job pods by. Tests validate it
against the Kubernetes schema and evaluate the chart's NetworkPolicies against its pod labels.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from likeness.core import tracing
from likeness.core.errors import FailedPrecondition, Unavailable
from likeness.training.executors import parallel
from likeness.training.registry import FAILED, RunRecord, RunRegistry
from likeness.training.settings import TrainingSettings
from likeness.training.spec import RunSpec

log = logging.getLogger("likeness.training.kubernetes")

CONTAINER = "train"
STORE_ACCESS_KEY, STORE_SECRET_KEY, DATABASE_URL_KEY = "accessKey", "secretKey", "url"  # the chart's keys
RUN_LABEL = "likeness.dev/run-id"
# Settings forwarded to the pod as plain env vars; credentials travel as secretKeyRefs instead.
FORWARDED = ("store_uri", "s3_endpoint", "s3_secure", "s3_region", "allowed_buckets", "model_repository",
             "model_cache_dir", "training_embedding_address", "training_detection_address",
             "training_eval_timeout_seconds", "log_level", "tls_ca_file", "tracing_enabled", "tracing_endpoint",
             "tracing_insecure", "tracing_sample_ratio", "tracing_keep_errors", "tracing_keep_slower_than_seconds")


def job_name(run_id: str) -> str:
    """DNS-1123 label under 63 characters, unique per run."""
    return "likeness-train-" + re.sub(r"[^a-z0-9-]", "-", run_id.lower())[:40].strip("-")


def with_default_gpus(spec: RunSpec, settings: TrainingSettings) -> RunSpec:
    """The spec as the Job runs it: `gpus` 0 takes the chart's default (LIKENESS_TRAINING_JOB_GPUS),
    so the process count under torchrun matches the GPUs the pod gets."""
    if spec.kubernetes.gpus or not settings.training_job_gpus:
        return spec
    return dataclasses.replace(spec, kubernetes=dataclasses.replace(spec.kubernetes, gpus=settings.training_job_gpus))


def job_manifest(run: RunRecord, settings: TrainingSettings) -> dict:
    """The run's Job; a run over several nodes becomes an Indexed Job (see `parallel`)."""
    spec = with_default_gpus(RunSpec.from_dict(run.spec), settings)
    manifest = _single_pod_job(run, settings)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["command"] = parallel.command(run.run_id, spec, manifest["metadata"]["name"],
                                            settings.training_rendezvous_port)
    if spec.kubernetes.nodes > 1:
        parallel.make_indexed(manifest, spec.kubernetes.nodes, settings.training_rendezvous_port)
    return manifest


def _single_pod_job(run: RunRecord, settings: TrainingSettings) -> dict:
    k8s = run.spec.get("kubernetes", {}) or {}
    gpus = int(k8s.get("gpus") or settings.training_job_gpus)
    # the release labels first (the NetworkPolicies admit Job pods by them), then the fixed ones
    labels = {"app.kubernetes.io/name": "likeness", **settings.training_job_pod_labels,
              "app.kubernetes.io/component": "training-run",
              "app.kubernetes.io/managed-by": "likeness-training", RUN_LABEL: run.run_id}
    env = [{"name": "LIKENESS_" + name.upper(), "value": str(getattr(settings, name))}
           for name in FORWARDED if str(getattr(settings, name))]
    env += [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "LIKENESS_LOG_JSON", "value": "true"}]
    parent = tracing.traceparent()
    if parent:  # the pod's spans join the trace of the call that started the run
        env.append({"name": "TRACEPARENT", "value": parent})
    # credentials only by reference, never as values in the manifest (same Secrets and keys as the
    # chart gives the services); store keys are optional: a file:// store needs none
    env += [_secret_env("LIKENESS_S3_ACCESS_KEY", settings.training_job_secret, STORE_ACCESS_KEY, optional=True),
            _secret_env("LIKENESS_S3_SECRET_KEY", settings.training_job_secret, STORE_SECRET_KEY, optional=True),
            _secret_env("LIKENESS_TRAINING_DATABASE_URL", settings.training_job_database_secret, DATABASE_URL_KEY)]
    memory = k8s.get("memory") or settings.training_job_memory
    requests = {"cpu": k8s.get("cpu") or settings.training_job_cpu, "memory": memory}
    limits = {"memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
        requests["nvidia.com/gpu"] = str(gpus)
    cache_volume = ({"name": "model-cache", "persistentVolumeClaim": {"claimName": settings.training_model_cache_claim}}
                    if settings.training_model_cache_claim else {"name": "model-cache", "emptyDir": {}})
    container = {
        "name": CONTAINER,
        "image": k8s.get("image") or settings.training_job_image,
        "imagePullPolicy": settings.training_job_pull_policy,
        "command": ["python", "-m", "likeness.training.job", "--run-id", run.run_id],
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [
            {"name": "model-cache", "mountPath": settings.model_cache_dir},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},  # torch workers share tensors through /dev/shm
        ],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }
    pod_spec = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [cache_volume, {"name": "tmp", "emptyDir": {}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}],
        "terminationGracePeriodSeconds": 60,
        "automountServiceAccountToken": False,  # the run never calls the Kubernetes API
    }
    if settings.training_job_service_account:
        pod_spec["serviceAccountName"] = settings.training_job_service_account
    if settings.training_job_priority_class:
        pod_spec["priorityClassName"] = settings.training_job_priority_class
    node_selector = k8s.get("node_selector") or settings.training_job_node_selector
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    tolerations = [_toleration(t) for t in (*settings.training_job_tolerations, *k8s.get("tolerations", ()))]
    if gpus:  # GPU nodes are commonly tainted nvidia.com/gpu:NoSchedule
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    unique = [t for i, t in enumerate(tolerations) if t not in tolerations[:i]]
    if unique:
        pod_spec["tolerations"] = unique
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(run.run_id), "namespace": settings.training_namespace, "labels": labels,
                     "annotations": {"likeness.dev/run-name": run.name[:200]}},
        "spec": {
            "backoffLimit": settings.training_job_backoff_limit,
            "ttlSecondsAfterFinished": settings.training_job_ttl_seconds,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> dict:
    ref = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _toleration(t: dict) -> dict:
    out = {"operator": t.get("operator") or "Equal"}
    for key in ("key", "value", "effect"):
        if t.get(key):
            out[key] = t[key]
    if out["operator"] == "Exists":
        out.pop("value", None)
    return out


def _api_client(api_client=None):
    if api_client is not None:
        return api_client
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, FileNotFoundError) as exc:
            raise FailedPrecondition("spec.executor", "KUBERNETES_JOB needs in-cluster credentials or a "
                                     f"kubeconfig; none found ({exc})") from exc
    return client.ApiClient()


class KubernetesJobExecutor:
    name = "kubernetes_job"

    def __init__(self, registry: RunRegistry, settings: TrainingSettings, api_client=None):
        self.registry, self.settings = registry, settings
        self._api_client = api_client

    def _api(self):
        self._api_client = _api_client(self._api_client)
        return self._api_client

    def _batch(self):
        from kubernetes import client

        return client.BatchV1Api(self._api())

    def check(self, spec: RunSpec) -> None:
        """What StartRun refuses before the run exists: no registry the pod can reach, or a
        data-parallel shape the pool or the backend cannot honour."""
        if self.registry.backend == "sqlite" or not self.settings.training_job_database_secret:
            raise FailedPrecondition("spec.executor", "KUBERNETES_JOB needs a registry the Job pod can reach: "
                                     "LIKENESS_TRAINING_DATABASE_URL on PostgreSQL and "
                                     "LIKENESS_TRAINING_JOB_DATABASE_SECRET naming a Secret with its `url`")
        parallel.check(with_default_gpus(spec, self.settings), gpus_per_node=self.settings.training_gpus_per_node,
                       backend=self.settings.training_distributed_backend)

    def submit(self, run: RunRecord) -> None:
        from kubernetes.client.exceptions import ApiException

        spec = RunSpec.from_dict(run.spec)
        self.check(spec)
        manifest = job_manifest(run, self.settings)
        name, ns = manifest["metadata"]["name"], self.settings.training_namespace
        try:
            if spec.kubernetes.nodes > 1 and self.settings.training_multi_node == "pytorchjob":
                from kubernetes import client

                group, version, plural = parallel.PYTORCHJOB_API
                client.CustomObjectsApi(self._api()).create_namespaced_custom_object(
                    group, version, ns, plural, parallel.pytorchjob(manifest, spec, run.run_id))
            else:
                created = self._batch().create_namespaced_job(ns, manifest)
                if spec.kubernetes.nodes > 1:  # rendezvous DNS for the pods, owned by the Job
                    from kubernetes import client

                    service = parallel.rendezvous_service(manifest, self.settings.training_rendezvous_port,
                                                          created.metadata.uid or "")
                    client.CoreV1Api(self._api()).create_namespaced_service(ns, service)
        except ApiException as exc:
            raise Unavailable("spec.executor", f"Kubernetes refused Job {name}: {exc.status} {exc.reason}") from exc
        self.registry.set_external_id(run.run_id, name)
        log.info("job created", extra={"run_id": run.run_id, "job": name, "processes": spec.kubernetes.world_size})

    def cancel(self, run: RunRecord) -> None:
        """The registry flag stops a running pod at its next step (keeping its checkpoints); the
        Job of a run cancelled while still queued is deleted."""
        if run.state == "cancelled" and run.external_id:
            from kubernetes.client.exceptions import ApiException

            try:
                self._batch().delete_namespaced_job(run.external_id, self.settings.training_namespace,
                                                    propagation_policy="Background")
            except ApiException as exc:
                log.warning("job delete failed", extra={"job": run.external_id, "status": exc.status})

    def reconcile(self) -> int:
        """Marks runs FAILED whose Job failed before the pod could record it; returns how many."""
        changed = 0
        for run in self.registry.unfinished(self.name):
            if not run.external_id:
                continue
            for cond in self._conditions(run):
                if cond.get("type") == "Failed" and cond.get("status") == "True":
                    self.registry.finish(run.run_id, FAILED, f"Kubernetes Job {run.external_id} failed: "
                                         f"{cond.get('reason')}: {cond.get('message')}")
                    changed += 1
        return changed

    def _conditions(self, run: RunRecord) -> list[dict]:
        ns = self.settings.training_namespace
        spec = RunSpec.from_dict(run.spec)
        if spec.kubernetes.nodes > 1 and self.settings.training_multi_node == "pytorchjob":
            from kubernetes import client

            group, version, plural = parallel.PYTORCHJOB_API
            obj = client.CustomObjectsApi(self._api()).get_namespaced_custom_object_status(
                group, version, ns, plural, run.external_id)
            return list((obj.get("status") or {}).get("conditions") or [])
        job = self._batch().read_namespaced_job_status(run.external_id, ns)
        return [{"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                for c in ((job.status.conditions or []) if job.status else [])]
