"""A run survives its process: a service that shuts down mid-run pauses it (state saved, owner
released) and the next service process adopts it and finishes it from that state."""

from __future__ import annotations

import time

import pytest

from likeness.api.v1 import training_pb2 as pb
from likeness.api.v1 import training_pb2_grpc
from likeness.core.store_local import LocalStore
from likeness.training.app import create_service
from likeness.training.registry import RunRegistry
from tests.helpers import ServiceThread, wait_for
from tests.training.conftest import write_dataset


@pytest.mark.slow
def test_shutdown_pauses_and_the_next_process_resumes(settings):
    store = LocalStore(settings.store_uri.removeprefix("file://"))
    write_dataset(store, "datasets/r", 3)
    spec = pb.RunSpec(base_model="tiny-sdxl", dataset_uri="datasets/r", trigger_token="ohwx", rank=4, epochs=20,
                      checkpoint_every_epochs=20, seed=5, sample_prompts=["a"], sample_seeds=[1], sample_steps=1)
    with ServiceThread(create_service(settings), settings) as first, first.channel() as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        run_id = stub.StartRun(pb.StartRunRequest(spec=spec)).run.run_id
        wait_for(lambda: stub.GetRun(pb.GetRunRequest(run_id=run_id)).run.step >= 2, 120, 0.02, "step 2")
    # the first process is gone (graceful stop): the run is paused, not cancelled
    registry = RunRegistry(settings.training_database_url)
    paused = registry.get(run_id)
    assert paused.state == "running" and paused.owner == "" and paused.resume_state is not None
    assert 2 <= paused.step < 60 and paused.resume_state[0] == paused.step
    assert any("paused at step" in n for n in paused.notes)

    with ServiceThread(create_service(settings), settings) as second, second.channel() as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        events = list(stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=300))
    assert events[-1].state == pb.RUN_STATE_SUCCEEDED, events[-1].message
    done = registry.get(run_id)
    assert [p.step for p in done.loss] == list(range(1, 61))  # no step lost, none trained twice
    assert "resume" in done.timings and len(done.checkpoints) == 1
    registry.close()


def test_claims_are_exclusive_until_the_owner_goes_quiet(tmp_path):
    from datetime import timedelta

    from likeness.training.registry.store import now
    from tests.training.factories import resolved_spec

    reg = RunRegistry(f"sqlite:///{tmp_path}/runs.db")
    reg.create_run("x", resolved_spec("x").to_dict(), executor="in_process")
    assert reg.claim("x", "pod-a")
    assert not reg.claim("x", "pod-b", stale_before=now() - timedelta(seconds=60))  # a is alive
    time.sleep(0.05)
    assert reg.claim("x", "pod-b", stale_before=now())  # a's heartbeat is older than the bound
    assert reg.get("x").owner == "pod-b"
    reg.heartbeat(["x"], "pod-a")  # a zombie's heartbeat does not steal it back
    assert not reg.claim("x", "pod-a", stale_before=now() - timedelta(seconds=60))
    reg.finish("x", "succeeded")
    assert not reg.claim("x", "pod-c")  # finished runs are never adopted
    reg.close()
