"""Listings cannot be poisoned: List returns spec-less summaries in pages bounded in count and bytes,
so maximal-size jobs (largest spec Submit accepts, megabyte errors) never break it; Get returns one
full job; a spec over the limit is refused at Submit."""

from __future__ import annotations

import grpc
import pytest

from likeness.api.v1 import common_pb2, orchestrator_pb2_grpc
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.core import limits, pages
from likeness.orchestrator.app import create_service
from likeness.orchestrator.jobstore import JobStore
from likeness.orchestrator.servicer import MAX_SPEC_BYTES
from likeness.orchestrator.settings import OrchestratorSettings
from tests.helpers import ServiceThread


@pytest.fixture
def api(tmp_path):
    settings = OrchestratorSettings(
        port=0, metrics_port=0, orchestrator_database_url=f"sqlite:///{tmp_path}/jobs.db",
        store_uri=f"file://{tmp_path}/store", orchestrator_run_jobs=False,
        orchestrator_generation_address="127.0.0.1:1")  # nothing listens: model checks are skipped
    with ServiceThread(create_service(settings), settings) as svc:
        yield orchestrator_pb2_grpc.OrchestratorServiceStub(svc.channel()), settings


def open_eyes(data_bytes: int) -> o.JobSpec:
    spec = o.JobSpec(open_eyes=o.OpenEyesSpec(model="m" * limits.LIMITS["OpenEyesSpec.model"],
                                              prompt="p" * limits.LIMITS["OpenEyesSpec.prompt"],
                                              image=common_pb2.ImageInput(data=b"")))
    spec.open_eyes.image.data = b"\0" * (data_bytes - spec.ByteSize() - 8)
    return spec


def maximal_curate() -> o.JobSpec:
    q = common_pb2.Quota(dimension="seed", group="g" * limits.LIMITS["Quota.group"], min=0, max=1)
    return o.JobSpec(curate=o.CurateSpec(
        import_source=o.ImportSource(uri="s3://b/" + "k" * (limits.LIMITS["ImportSource.uri"] - 7)),
        target_count=1, quotas=[q] * limits.LIMITS["CurateSpec.quotas"],
        trigger_token="t" * limits.LIMITS["CurateSpec.trigger_token"]))


@pytest.mark.slow
def test_maximal_jobs_list_in_bounded_pages_and_get_returns_one_whole(api):
    stub, settings = api
    big = open_eyes(MAX_SPEC_BYTES)
    assert big.ByteSize() <= MAX_SPEC_BYTES
    ids = [stub.Submit(o.SubmitRequest(spec=big), timeout=60).job.job_id for _ in range(2)]

    with pytest.raises(grpc.RpcError) as err:  # one byte more is refused, naming the size and limit
        stub.Submit(o.SubmitRequest(spec=open_eyes(MAX_SPEC_BYTES + 9)), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"over the limit of {MAX_SPEC_BYTES:,}" in err.value.details() and "spec" in err.value.details()

    jobs = JobStore(settings.orchestrator_database_url)
    try:  # curate specs at every field limit (import checked later, so stored directly); then every
        # job fails with a megabyte error and a large summary
        ids += [jobs.submit("curate", maximal_curate().SerializeToString(), f"curate-{i}")[0].job_id for i in range(3)]
        while (leased := jobs.lease_next("test", 60)) is not None:
            assert jobs.finish(leased.job_id, "test", "FAILED", error="e" * 1_000_000,
                               summary={f"k{j}": "v" * 100 for j in range(100)})
    finally:
        jobs.close()

    seen, token, pages_read = [], "", 0
    while True:
        page = stub.List(o.ListRequest(page_size=1000, page_token=token), timeout=30)
        assert page.ByteSize() <= pages.MAX_PAGE_BYTES
        assert all(len(j.error) == 1000 and j.state == o.JOB_STATE_FAILED for j in page.jobs)
        seen += [j.job_id for j in page.jobs]
        pages_read += 1
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    # summaries are small: every job fits one page despite 32 MiB of specs (what broke the old List,
    # which carried specs) and 5 MB of errors
    assert pages_read == 1
    full = stub.Get(o.GetRequest(job_id=ids[0]), timeout=30).job
    assert full.spec == big and full.ByteSize() > MAX_SPEC_BYTES - 1024


def test_pages_follow_each_other_newest_first_and_stop_at_the_byte_budget(tmp_path):
    jobs = JobStore(f"sqlite:///{tmp_path}/jobs.db")
    try:
        ids = [jobs.submit("curate", b"", "")[0].job_id for _ in range(25)]
        collected, cursor = [], None
        while True:
            rows = jobs.list(11, cursor=cursor)
            out, token = pages.fill(rows, 10, lambda j: o.JobSummary(job_id=j.job_id),
                                    lambda j: pages.Cursor(j.created_at, j.job_id))
            collected += [m.job_id for m in out]
            if not token:
                break
            cursor = pages.decode(token)
        assert collected == [j.job_id for j in jobs.list(100)] and sorted(collected) == sorted(ids)
        rows = jobs.list(100)
        out, token = pages.fill(rows, 100, lambda j: o.JobSummary(job_id=j.job_id, error="x" * 1000),
                                lambda j: pages.Cursor(j.created_at, j.job_id), max_bytes=5000)
        assert len(out) == 4 and token  # 4 summaries of ~1 KB fit 5,000 bytes; the page says more follow
        assert [j.job_id for j in jobs.list(100, cursor=pages.decode(token))][0] == rows[4].job_id
    finally:
        jobs.close()


def test_bad_page_arguments_are_invalid_argument(api):
    stub, _ = api
    for request, words in ((o.ListRequest(page_size=1001), "page_size"),
                           (o.ListRequest(page_token="nonsense"), "page_token"),
                           (o.ListRequest(page_token="x" * 257), "over the limit of 256")):
        with pytest.raises(grpc.RpcError) as err:
            stub.List(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details()
