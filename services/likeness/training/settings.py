"""Settings of the training service (`LIKENESS_TRAINING_*`)."""

from __future__ import annotations

import json

from pydantic import Field, ValidationInfo, field_validator

from likeness.core.settings import CommonSettings


class TrainingSettings(CommonSettings):
    # Run registry: SQLite file embedded, PostgreSQL in a cluster
    # (`postgresql+psycopg://user:pass@host/db`). Migrations run on start-up.
    training_database_url: str = "sqlite:////tmp/likeness/training.db"
    # Where runs execute when a spec does not say: `in_process` or `kubernetes_job`.
    training_executor: str = Field("in_process", pattern="^(in_process|kubernetes_job)$")
    # Runs trained at once inside this process; more wait QUEUED (the CPU/GPU is shared).
    training_max_concurrent_runs: int = Field(1, ge=1, le=16)
    # torch intra-op threads on CPU; 0 keeps torch's default (one per core). Small models on a
    # shared CPU train several times faster on 1 thread (bench/training.py measures it).
    training_torch_threads: int = Field(0, ge=0, le=256)
    # Recompute UNet activations during backward (~30% slower, far less memory): `auto` turns it
    # on for GPUs, where SDXL LoRA at 1024 px otherwise needs more than 24 GB.
    training_gradient_checkpointing: str = Field("auto", pattern="^(auto|on|off)$")
    # Evaluation clients; empty means that score is not measured and is recorded as NaN.
    training_embedding_address: str = ""
    training_detection_address: str = ""
    training_eval_timeout_seconds: float = Field(60.0, gt=0)
    # Kubernetes Job executor.
    training_namespace: str = "likeness"
    training_job_image: str = "ghcr.io/likeness/likeness:gpu"
    training_job_service_account: str = ""
    # Secrets the Job pod reads (the chart's names and keys): the store keys (`accessKey`,
    # `secretKey`) and the registry URL (`url`); the pod writes to the same registry as the service.
    training_job_secret: str = "likeness-store"
    training_job_database_secret: str = "likeness-database"
    # PersistentVolumeClaim mounted as the model cache; empty uses an emptyDir.
    training_model_cache_claim: str = ""
    training_job_ttl_seconds: int = Field(86_400, ge=0)
    training_job_backoff_limit: int = Field(2, ge=0, le=20)
    # What a run's Job pod gets when its spec's `kubernetes` options leave a field unset (the chart
    # renders these from services.training.job): GPUs, CPU request, memory request and limit,
    # scheduling, and the labels the NetworkPolicies select the pod by. Dicts/lists are JSON.
    training_job_gpus: int = Field(0, ge=0, le=8)
    training_job_cpu: str = "2"
    training_job_memory: str = "16Gi"
    training_job_node_selector: dict[str, str] = Field(default_factory=dict)
    training_job_tolerations: list[dict[str, str]] = Field(default_factory=list)
    training_job_priority_class: str = ""
    training_job_pull_policy: str = Field("IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    training_job_pod_labels: dict[str, str] = Field(default_factory=dict)
    # Data-parallel runs (spec.kubernetes.gpus > 1 or nodes > 1) start one process per GPU under
    # torchrun. `auto` uses NCCL on GPUs and gloo on CPUs.
    training_distributed_backend: str = Field("auto", pattern="^(auto|gloo|nccl)$")
    # GPUs one node of the training pool holds: a run asking for more per node is refused.
    training_gpus_per_node: int = Field(8, ge=1, le=16)
    # Runs across nodes: an Indexed Job + headless Service for rendezvous (`indexed_job`), or a
    # Kubeflow PyTorchJob (`pytorchjob`) where the cluster has the Training Operator.
    training_multi_node: str = Field("indexed_job", pattern="^(indexed_job|pytorchjob)$")
    # Port the rank-0 pod listens on for rendezvous (c10d store).
    training_rendezvous_port: int = Field(29500, ge=1024, le=65535)
    # Seconds between WatchRun polls of the registry (works across replicas and executors).
    training_watch_interval_seconds: float = Field(0.25, gt=0, le=10)

    @field_validator("training_job_node_selector", "training_job_tolerations", "training_job_pod_labels",
                     mode="before")
    @classmethod
    def _json(cls, value, info: ValidationInfo):
        """The chart passes these as JSON strings; Python callers pass dicts and lists."""
        if isinstance(value, str):
            if not value.strip():
                return [] if info.field_name == "training_job_tolerations" else {}
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg} at character {exc.pos})") from exc
        return value
