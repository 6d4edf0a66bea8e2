"""The orchestrator's gRPC face: validation at Submit, NOT_FOUND, bearer-token auth, Watch."""

import grpc
import pytest

from likeness.api.v1 import common_pb2, orchestrator_pb2_grpc
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.orchestrator.app import create_service, interceptors
from likeness.orchestrator.settings import OrchestratorSettings
from tests.helpers import ServiceThread, health_status

TOKEN = "s3cr3t-token-for-tests"


@pytest.fixture
def api(tmp_path):
    settings = OrchestratorSettings(
        port=0, metrics_port=0, orchestrator_database_url=f"sqlite:///{tmp_path}/jobs.db",
        store_uri=f"file://{tmp_path}/store", orchestrator_run_jobs=False, orchestrator_auth_token=TOKEN,
        orchestrator_generation_address="127.0.0.1:1")  # nothing listens: model checks are skipped
    with ServiceThread(create_service(settings), settings, interceptors=interceptors(settings)) as svc:
        yield svc, settings


AUTH = (("authorization", f"Bearer {TOKEN}"),)


def stub(svc):
    return orchestrator_pb2_grpc.OrchestratorServiceStub(svc.channel())


def test_auth_required_and_health_stays_open(api):
    svc, _ = api
    with pytest.raises(grpc.RpcError) as err:
        stub(svc).List(o.ListRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "missing bearer token" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub(svc).List(o.ListRequest(), metadata=(("authorization", "Bearer wrong"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "does not match" in err.value.details()
    assert health_status(svc.port) == "SERVING"
    assert stub(svc).List(o.ListRequest(), metadata=AUTH).jobs == []


def test_submit_validates_and_watch_streams(api, tmp_path):
    svc, _ = api
    s = stub(svc)
    with pytest.raises(grpc.RpcError) as err:
        s.Submit(o.SubmitRequest(spec=o.JobSpec(curate=o.CurateSpec(target_count=-1))), metadata=AUTH)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:  # a dataset that does not exist is refused at Submit
        s.Submit(o.SubmitRequest(spec=o.JobSpec(curate=o.CurateSpec(
            import_source=o.ImportSource(uri=f"file://{tmp_path}/store/nothing-here/"), target_count=2))),
            metadata=AUTH)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "holds no PNG, JPEG or WebP image" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        s.Get(o.GetRequest(job_id="missing"), metadata=AUTH)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    spec = o.JobSpec(open_eyes=o.OpenEyesSpec(model="tiny-sdxl",
                                              image=common_pb2.ImageInput(uri=f"file://{tmp_path}/store/x.png")))
    job = s.Submit(o.SubmitRequest(spec=spec, idempotency_key="k"), metadata=AUTH).job
    assert job.state == o.JOB_STATE_QUEUED and job.kind == o.JOB_KIND_OPEN_EYES
    assert s.Submit(o.SubmitRequest(spec=spec, idempotency_key="k"), metadata=AUTH).job.job_id == job.job_id
    cancelled = s.Cancel(o.CancelRequest(job_id=job.job_id), metadata=AUTH).job
    assert cancelled.state == o.JOB_STATE_CANCELLED
    events = list(s.Watch(o.WatchRequest(job_id=job.job_id), metadata=AUTH, timeout=10))
    assert events[-1].type == o.EVENT_TYPE_FINISHED and events[-1].state == o.JOB_STATE_CANCELLED
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert health_status(svc.port) == "SERVING"
