"""Data-parallel runs on Kubernetes: how a run with several GPUs or nodes is launched.

- one process (gpus <= 1, one node): the pod runs `python -m likeness.training.job` as before;
- several GPUs on one node: the pod runs `torchrun --standalone --nproc-per-node G`;
- several nodes (`indexed_job`): an Indexed Job of N pods plus a headless Service named after the
  Job, so pod i is reachable as `<job>-i.<job>`; every pod runs `torchrun --nnodes N
  --node-rank $(JOB_COMPLETION_INDEX)` with pod 0 as the rendezvous master;
- several nodes (`pytorchjob`): a Kubeflow PyTorchJob (Master + Workers) with the same pod
  template; the Training Operator sets the rendezvous environment for torchrun.
"""

from __future__ import annotations

import copy

from likeness.core.errors import FailedPrecondition
from likeness.training.spec import RunSpec

PYTORCHJOB_API = ("kubeflow.org", "v1", "pytorchjobs")
JOB_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def check(spec: RunSpec, *, gpus_per_node: int, backend: str) -> None:
    """Refuses what the cluster or the launcher cannot honour, naming the setting."""
    k = spec.kubernetes
    if k.gpus > gpus_per_node:
        raise FailedPrecondition("spec.kubernetes.gpus", f"{k.gpus} GPUs per node is more than a node of the "
                                 f"training pool holds (LIKENESS_TRAINING_GPUS_PER_NODE={gpus_per_node}); "
                                 "spread the run over spec.kubernetes.nodes instead")
    if backend == "nccl" and k.gpus == 0:
        raise FailedPrecondition("spec.kubernetes.gpus", "LIKENESS_TRAINING_DISTRIBUTED_BACKEND=nccl needs GPUs "
                                 "and spec.kubernetes.gpus is 0; set gpus or use backend gloo/auto")
    if k.world_size > 1 and spec.batch_size < k.world_size:
        raise FailedPrecondition("spec.batch_size", f"{spec.batch_size} is the global batch and is smaller than "
                                 f"the run's {k.world_size} training processes ({max(k.gpus, 1)} per node x "
                                 f"{k.nodes} nodes); every process needs at least one item per micro-batch")


def command(run_id: str, spec: RunSpec, job: str, rendezvous_port: int) -> list[str]:
    """The container command of the run's pod(s)."""
    k = spec.kubernetes
    entry = ["-m", "likeness.training.job", "--run-id", run_id]
    if k.world_size == 1:
        return ["python", *entry]
    per_node = str(max(k.gpus, 1))
    if k.nodes == 1:
        return ["torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", per_node, *entry]
    return ["torchrun", "--nnodes", str(k.nodes), "--nproc-per-node", per_node,
            "--node-rank", "$(JOB_COMPLETION_INDEX)", "--master-addr", f"{job}-0.{job}",
            "--master-port", str(rendezvous_port), *entry]


def make_indexed(manifest: dict, nodes: int, rendezvous_port: int) -> None:
    """Turns a one-pod Job into an Indexed Job of `nodes` pods reachable through the Service."""
    name = manifest["metadata"]["name"]
    spec = manifest["spec"]
    spec.update({"completionMode": "Indexed", "completions": nodes, "parallelism": nodes})
    pod = spec["template"]["spec"]
    pod["subdomain"] = name  # with the headless Service of that name: <job>-<index>.<job>
    container = pod["containers"][0]
    container["env"].append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.annotations['{JOB_INDEX_ANNOTATION}']"}}})
    container["ports"] = [{"name": "rendezvous", "containerPort": rendezvous_port, "protocol": "TCP"}]


def rendezvous_service(manifest: dict, rendezvous_port: int, owner_uid: str = "") -> dict:
    """The headless Service that gives each pod of an Indexed Job a DNS name."""
    meta = manifest["metadata"]
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": dict(meta["labels"])},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": dict(manifest["spec"]["template"]["metadata"]["labels"]),
                 "ports": [{"name": "rendezvous", "port": rendezvous_port, "targetPort": rendezvous_port}]},
    }
    if owner_uid:  # deleted with its Job
        service["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                   "uid": owner_uid, "blockOwnerDeletion": False}]
    return service


def pytorchjob(manifest: dict, spec: RunSpec, run_id: str) -> dict:
    """The same pod as a Kubeflow PyTorchJob: one Master and nodes-1 Workers."""
    k = spec.kubernetes
    template = copy.deepcopy(manifest["spec"]["template"])
    container = template["spec"]["containers"][0]
    container["name"] = "pytorch"  # the operator finds the training container by this name
    container["command"] = ["torchrun", "--nproc-per-node", str(max(k.gpus, 1)),
                            "-m", "likeness.training.job", "--run-id", run_id]
    replica = {"restartPolicy": "OnFailure", "template": template}
    return {
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": copy.deepcopy(manifest["metadata"]),
        "spec": {
            "runPolicy": {"backoffLimit": manifest["spec"]["backoffLimit"],
                          "ttlSecondsAfterFinished": manifest["spec"]["ttlSecondsAfterFinished"]},
            "nprocPerNode": str(max(k.gpus, 1)),
            "pytorchReplicaSpecs": {"Master": {**replica, "replicas": 1},
                                    "Worker": {**copy.deepcopy(replica), "replicas": k.nodes - 1}},
        },
    }
