"""Data-parallel training on this CPU: the Job pod of a run with 2 GPUs runs `torchrun
--nproc-per-node 2`, here two gloo ranks. Two ranks with the global batch split between them end
with the weights of one process training the whole batch; only rank 0 writes; killing one rank
stops the run cleanly at its last checkpoint, and the Job's retry finishes it with the same
weights as an uninterrupted single process."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors

from likeness.api.v1 import training_pb2 as pb
from likeness.api.v1 import training_pb2_grpc
from likeness.core.store_local import LocalStore
from likeness.training.app import create_service
from likeness.training.distributed import Ranks
from likeness.training.registry import RunRegistry
from tests.helpers import ServiceThread, wait_for
from tests.training.conftest import write_dataset
from tests.training.fake_kube import FakeApiServer, fake_api_client
from tests.training.pods import pod_env, start_pod

EPOCHS, CHECKPOINT_EVERY = 40, 20  # 2 images, global batch 2: one optimizer step per epoch


def rank_pid(torchrun_pid: int, local_rank: int) -> int | None:
    """The worker process of `local_rank` among torchrun's children."""
    import psutil

    for child in psutil.Process(torchrun_pid).children(recursive=True):
        try:
            if child.environ().get("LOCAL_RANK") == str(local_rank) and "likeness.training.job" in child.cmdline():
                return child.pid
        except psutil.Error:
            continue
    return None


def single_process_weights(settings, store, run_spec: dict) -> dict[str, torch.Tensor]:
    """The same run trained by one process over the whole batch, as a reference."""
    from likeness.diffusion.pipelines import load_pipeline
    from likeness.training.dataset import load_dataset
    from likeness.training.spec import RunSpec
    from likeness.training.trainer import Hooks, LoraTrainer

    spec = RunSpec.from_dict(run_spec)
    root = Path(settings.model_repository.removeprefix("file://"))
    pipe = load_pipeline(root / "tiny-sdxl", "sdxl")
    pipe.set_progress_bar_config(disable=True)
    trainer = LoraTrainer(spec, pipe, "sdxl", load_dataset(store, spec.dataset_uri))
    assert trainer.train(Hooks()).state == "succeeded"
    return {k: v.detach().float() for k, v in trainer._trainable().items()}


@pytest.mark.slow
@pytest.mark.postgres
def test_two_ranks_match_one_process_and_survive_a_lost_rank(settings, postgres_url, tmp_path):
    settings = settings.model_copy(update={"training_database_url": postgres_url,
                                           "training_executor": "kubernetes_job"})
    store = LocalStore(settings.store_uri.removeprefix("file://"))
    write_dataset(store, "datasets/ddp", 2)
    spec = pb.RunSpec(base_model="tiny-sdxl", dataset_uri="datasets/ddp", trigger_token="ohwx", rank=4,
                      batch_size=2, epochs=EPOCHS, checkpoint_every_epochs=CHECKPOINT_EVERY, seed=3,
                      unet_lr=1e-3, sample_seeds=[1], sample_prompts=["a portrait"], sample_steps=1,
                      kubernetes=pb.KubernetesOptions(gpus=2))
    with fake_api_client() as api, ServiceThread(create_service(settings, kubernetes_api=api), settings) as svc, \
            svc.channel() as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        run_id = stub.StartRun(pb.StartRunRequest(spec=spec)).run.run_id
        (_, manifest), = FakeApiServer.posted
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:6] == ["torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", "2"]
        env = pod_env(container, {(settings.training_job_database_secret, "url"): postgres_url})

        def run():
            return stub.GetRun(pb.GetRunRequest(run_id=run_id)).run

        first = start_pod(container, env, tmp_path)
        wait_for(lambda: run().step > CHECKPOINT_EVERY, 240, 0.01, "a step past the first checkpoint")
        victim = rank_pid(first.pid, 1)
        assert victim is not None, "rank 1 not found among torchrun's workers"
        os.kill(victim, signal.SIGKILL)
        output = first.communicate(timeout=180)[0].decode()
        assert first.returncode != 0, output[-3000:]
        stopped = run()
        assert stopped.state == pb.RUN_STATE_RUNNING and stopped.step < EPOCHS, output[-3000:]
        assert len(stopped.checkpoints) == 1  # the retry resumes from it

        retry = start_pod(container, env, tmp_path)  # the Job controller's retry
        output = retry.communicate(timeout=300)[0].decode()
        assert retry.returncode == 0, output[-3000:]

    registry = RunRegistry(postgres_url)
    final = registry.get(run_id)
    registry.close()
    assert final.state == "succeeded", final.error
    assert any("data parallel: 2 ranks (gloo)" in n for n in final.notes)
    # rank 0 alone records: one loss per step (steps after the checkpoint trained again replace theirs)
    assert [p.step for p in final.loss] == list(range(1, EPOCHS + 1))
    assert [c.epoch for c in final.checkpoints] == [CHECKPOINT_EVERY, EPOCHS]
    written = sorted(k for k in store.list(final.spec["output_prefix"]) if "/checkpoints/" in k)
    assert len(written) == 2 * 4, written  # diffusers + kohya weights, state, samples per checkpoint

    last = load_safetensors(store.get(final.checkpoints[-1].diffusers_weights.uri))
    reference = single_process_weights(settings, store, final.spec)
    unet = {k.removeprefix("unet."): v for k, v in reference.items() if k.startswith("unet.")}
    assert len(last) == len(unet) > 0
    for name, tensor in last.items():
        match = [v for k, v in unet.items() if _same_layer(k, name)]
        assert len(match) == 1, name
        torch.testing.assert_close(tensor.float(), match[0], rtol=1e-4, atol=1e-5)


def _same_layer(peft_name: str, file_key: str) -> bool:
    """peft's `down_blocks.0....to_q.lora_A.default.weight` vs the file's `unet.down_blocks.0....to_q.lora_A.weight`."""
    return file_key.removeprefix("unet.") == peft_name.replace(".default", "")


def test_rank_shares_add_up_to_the_whole_batch(model_root):
    """What each rank computes for its share of a micro-batch sums to the single-process loss and
    gradient: the draws of an item depend on its place in the global batch, not on the rank."""
    from tests.training.test_trainer import trainer

    t = trainer(model_root, batch_size=2, caption_dropout=0.3, shuffle_captions=True, seed=5)
    params = [p for g in t.optimizer.param_groups for p in g["params"]]

    def loss_and_grads(shard):
        t.optimizer.zero_grad(set_to_none=True)
        loss = t._micro_batch_loss(shard, step=3, micro=0, total=2)
        loss.backward()
        return float(loss.detach()), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    whole, g_whole = loss_and_grads([(0, 0), (1, 1)])
    first, g_first = loss_and_grads(Ranks(0, 2).shard([0, 1]))
    second, g_second = loss_and_grads(Ranks(1, 2).shard([0, 1]))
    assert Ranks(1, 2).shard([0, 1]) == [(1, 1)]
    assert whole == pytest.approx(first + second, rel=1e-5)
    assert max(float((a + b - w).abs().max()) for a, b, w in zip(g_first, g_second, g_whole, strict=True)) < 1e-5
    # and the shares differ: each rank really trains only its own items
    assert abs(first - second) > 1e-6


@pytest.mark.parametrize(("gpus", "nodes", "batch", "setting"), [
    (6, 1, 12, "LIKENESS_TRAINING_GPUS_PER_NODE=4"),
    (2, 1, 1, "spec.batch_size"),
    (0, 2, 2, "LIKENESS_TRAINING_DISTRIBUTED_BACKEND=nccl"),
])
def test_what_cannot_be_honoured_is_refused_naming_the_setting(gpus, nodes, batch, setting):
    from likeness.core.errors import FailedPrecondition
    from likeness.training.executors import parallel
    from likeness.training.spec import KubernetesSpec
    from tests.training.factories import resolved_spec

    spec = resolved_spec("r", batch_size=batch, kubernetes=KubernetesSpec(gpus=gpus, nodes=nodes))
    with pytest.raises(FailedPrecondition, match=setting.replace(".", r"\.")):
        parallel.check(spec, gpus_per_node=4, backend="nccl" if "nccl" in setting else "auto")
    if gpus == 6:  # the same spec fits a pool whose nodes hold 8 GPUs
        parallel.check(spec, gpus_per_node=8, backend="auto")


def test_the_in_process_executor_refuses_a_data_parallel_spec(ctx):
    from likeness.core.errors import FailedPrecondition
    from likeness.training.executors.in_process import InProcessExecutor
    from likeness.training.spec import KubernetesSpec
    from tests.training.factories import resolved_spec

    executor = InProcessExecutor(ctx)
    try:
        executor.check(resolved_spec("r", kubernetes=KubernetesSpec(gpus=1)))  # one process: fine
        with pytest.raises(FailedPrecondition, match="KUBERNETES_JOB"):
            executor.check(resolved_spec("r", batch_size=2, kubernetes=KubernetesSpec(gpus=2)))
    finally:
        executor.shutdown()


def test_manifests_of_each_parallel_shape(registry):
    import kubernetes_validate

    from likeness.training.executors import parallel
    from likeness.training.executors.kubernetes_job import job_manifest
    from likeness.training.settings import TrainingSettings
    from likeness.training.spec import KubernetesSpec
    from tests.training.factories import resolved_spec
    from tests.training.test_kubernetes_job import VERSIONS

    def manifest(gpus, nodes):
        spec = resolved_spec(f"r{gpus}{nodes}", executor="kubernetes_job", batch_size=16,
                             kubernetes=KubernetesSpec(gpus=gpus, nodes=nodes))
        run = registry.create_run(spec.name, spec.to_dict(), executor="kubernetes_job")
        return run, job_manifest(run, TrainingSettings(training_namespace="ml"))

    run, one = manifest(1, 1)
    assert one["spec"]["template"]["spec"]["containers"][0]["command"][:3] == ["python", "-m", "likeness.training.job"]
    run, multi = manifest(4, 3)
    job = multi["spec"]
    pod = job["template"]["spec"]
    c = pod["containers"][0]
    name = multi["metadata"]["name"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 3, 3)
    assert pod["subdomain"] == name and c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert c["command"][:9] == ["torchrun", "--nnodes", "3", "--nproc-per-node", "4", "--node-rank",
                                "$(JOB_COMPLETION_INDEX)", "--master-addr", f"{name}-0.{name}"]
    assert any(e["name"] == "JOB_COMPLETION_INDEX" for e in c["env"])
    service = parallel.rendezvous_service(multi, 29500, "uid-1")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["selector"] == job["template"]["metadata"]["labels"]
    for version in (VERSIONS[0], VERSIONS[-1]):
        kubernetes_validate.validate(multi, version, strict=True)
        kubernetes_validate.validate(service, version, strict=True)
    from likeness.training.spec import RunSpec

    torch_job = parallel.pytorchjob(multi, RunSpec.from_dict(run.spec), run.run_id)
    replicas = torch_job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    assert replicas["Worker"]["template"]["spec"]["containers"][0]["name"] == "pytorch"


@pytest.mark.postgres
def test_multi_node_submit_creates_the_rendezvous_service_or_a_pytorchjob(postgres_url):
    from likeness.training.executors.kubernetes_job import KubernetesJobExecutor
    from likeness.training.settings import TrainingSettings
    from likeness.training.spec import KubernetesSpec
    from tests.training.factories import resolved_spec

    registry = RunRegistry(postgres_url)
    try:
        for mode, expected in (("indexed_job", ["/apis/batch/v1/namespaces/ml/jobs", "/api/v1/namespaces/ml/services"]),
                               ("pytorchjob", ["/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"])):
            spec = resolved_spec(f"mn-{mode}-{os.getpid()}", executor="kubernetes_job", batch_size=4,
                                 kubernetes=KubernetesSpec(gpus=2, nodes=2))
            run = registry.create_run(spec.name, spec.to_dict(), executor="kubernetes_job")
            settings = TrainingSettings(training_namespace="ml", training_multi_node=mode)
            with fake_api_client() as api:
                KubernetesJobExecutor(registry, settings, api).submit(run)
                assert [path for path, _ in FakeApiServer.posted] == expected
    finally:
        registry.close()
