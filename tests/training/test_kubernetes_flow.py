"""The cluster path without a cluster: the service (PostgreSQL registry, KUBERNETES_JOB executor)
creates the Job through the real `kubernetes` client; the test then runs exactly the Job's command
with exactly the Job's environment (plus the Secret's registry URL), as the pod would; WatchRun on
the service streams the pod's progress from the shared registry to the end. The first pod is
sent SIGTERM mid-run (a node drain): it saves its state and exits 143, and the Job's retry (a
second pod with the same command) finishes the run from that step."""

from __future__ import annotations

import signal

import pytest

from likeness.api.v1 import training_pb2 as pb
from likeness.api.v1 import training_pb2_grpc
from likeness.core.store_local import LocalStore
from likeness.training.app import create_service
from tests.helpers import ServiceThread, wait_for
from tests.training.conftest import write_dataset
from tests.training.fake_kube import FakeApiServer, fake_api_client
from tests.training.pods import pod_env, start_pod


@pytest.mark.slow
@pytest.mark.postgres
def test_job_pod_trains_a_run_the_service_started(settings, postgres_url, tmp_path):
    settings = settings.model_copy(update={"training_database_url": postgres_url,
                                           "training_executor": "kubernetes_job"})
    store = LocalStore(settings.store_uri.removeprefix("file://"))
    write_dataset(store, "datasets/k8s", 2)
    spec = pb.RunSpec(base_model="tiny-sdxl", dataset_uri="datasets/k8s", trigger_token="ohwx", rank=4,
                      epochs=25, checkpoint_every_epochs=25, seed=2, sample_seeds=[1], sample_prompts=["a portrait"],
                      sample_steps=1,
                      kubernetes=pb.KubernetesOptions(gpus=1, memory="8Gi"))
    with fake_api_client() as api, ServiceThread(create_service(settings, kubernetes_api=api), settings) as svc, \
            svc.channel() as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        run = stub.StartRun(pb.StartRunRequest(spec=spec)).run
        assert run.state == pb.RUN_STATE_QUEUED
        (path, manifest), = FakeApiServer.posted
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"

        # the pod: the manifest's command and env, with secretKeyRefs resolved as the kubelet would
        env = pod_env(container, {(settings.training_job_database_secret, "url"): postgres_url})
        assert env["LIKENESS_TRAINING_DATABASE_URL"] == postgres_url

        def pod():
            return start_pod(container, env, tmp_path)

        def step():
            return stub.GetRun(pb.GetRunRequest(run_id=run.run_id)).run.step

        first = pod()
        wait_for(lambda: step() >= 1, 120, 0.01, "the first pod's first step")
        first.send_signal(signal.SIGTERM)  # node drain
        output = first.communicate(timeout=120)[0].decode()
        assert first.returncode == 143, output[-3000:]
        paused = stub.GetRun(pb.GetRunRequest(run_id=run.run_id)).run
        assert paused.state == pb.RUN_STATE_RUNNING and 1 <= paused.step < 50

        retry = pod()  # the Job controller's retry: same command, same env
        events = list(stub.WatchRun(pb.WatchRunRequest(run_id=run.run_id), timeout=300))
        output = retry.communicate(timeout=120)[0].decode()
        assert retry.returncode == 0, output[-3000:]

        assert events[-1].state == pb.RUN_STATE_SUCCEEDED, events[-1].message
        assert events[-1].step == 50 and any(e.HasField("checkpoint") for e in events)
        final = stub.GetRun(pb.GetRunRequest(run_id=run.run_id)).run
        assert [p.step for p in final.loss] == list(range(1, 51)) and len(final.checkpoints) == 1
        assert store.exists(final.checkpoints[0].kohya_weights.uri)
