"""Faults a job survives are in its own record: a service call that needed retries (count, last
status), an S3 call that stalled (from a worker thread), and a lease takeover (which replica, which
attempt, how much work was reused) each become a WARNING event, a summary count and a report row."""

from __future__ import annotations

import asyncio
import contextvars

import grpc

from likeness.api.v1 import detection_pb2
from likeness.core import faults
from likeness.core.store_s3 import S3Store
from likeness.orchestrator import runner as runner_mod
from likeness.orchestrator.clients import ServiceClient
from likeness.orchestrator.settings import OrchestratorSettings
from tests.helpers import free_port
from tests.orchestrator.replicas import counting_workflow, run_alone, take_over


def collected(fn):
    """Runs fn in a context whose fault sink collects into a list; returns (result, faults)."""
    got: list[faults.Fault] = []
    ctx = contextvars.copy_context()
    ctx.run(faults.SINK.set, got.append)
    return ctx.run(fn), got



async def _assess_collecting_faults(port: int, settings: OrchestratorSettings):
    """One Assess through the orchestrator's client; (its response, the faults it reported)."""
    client = ServiceClient("detection", f"127.0.0.1:{port}", settings)
    got: list[faults.Fault] = []
    faults.SINK.set(got.append)
    response = await client.call("Assess", detection_pb2.AssessRequest())
    await client.close()
    return response, got

def test_service_retries_are_reported_with_count_and_last_status():
    failures = {"left": 2}

    async def assess(request, context):
        if failures["left"]:
            failures["left"] -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return detection_pb2.AssessResponse(backend="fake")

    async def scenario():
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(assess, detection_pb2.AssessRequest.FromString,
                                                      detection_pb2.AssessResponse.SerializeToString)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "likeness.v1.DetectionService", {"Assess": handler})])
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            return await _assess_collecting_faults(port, OrchestratorSettings(orchestrator_retry_seconds=30))
        finally:
            await server.stop(0)

    response, got = asyncio.run(scenario())
    assert response.backend == "fake"
    assert [f.kind for f in got] == ["service_retry"]
    assert "detection.Assess: retried 2 times" in got[0].message and "last status UNAVAILABLE" in got[0].message
    assert got[0].message.endswith("then succeeded")


def test_store_stall_is_reported_from_the_thread_that_waited():
    import urllib3

    store = S3Store(client=None, bucket="likeness", retry_seconds=30, endpoint="127.0.0.1:1")
    attempts = {"n": 0}

    def flaky():
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")
        return b"ok"

    result, got = collected(lambda: store._call("get k", flaky))
    assert result == b"ok" and [f.kind for f in got] == ["store_stall"]
    assert "S3 get k: stalled" in got[0].message and "2 retries (last error ReadTimeoutError)" in got[0].message
    assert collected(lambda: store._call("get k", lambda: b"fine"))[1] == []  # no retry, no fault


async def stalling_workflow(ctx, spec):
    """One store stall reported from a worker thread (as S3Store does), then the counting work."""
    await asyncio.to_thread(faults.report, "store_stall", "S3 put x: stalled 3.0s, 2 retries, then succeeded")
    return await counting_workflow(ctx, spec)


def test_takeover_and_stall_are_job_events_summary_and_report(replica_env, monkeypatch):
    _, jobs, store = replica_env
    monkeypatch.setitem(runner_mod.WORKFLOWS, "curate", stalling_workflow)
    done = take_over(replica_env)
    assert done.state == "SUCCEEDED", done.error
    events = jobs.events_after(done.job_id, 0)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # per job, from 1
    warnings = [e.message for e in events if e.type == "WARNING"]
    # replica-b, or (on a loaded machine) replica-a's lease call still in flight when it "died"
    assert any(m.startswith("takeover: resumed by replica-")
               and m.endswith("(attempt 2) after the lease of replica-a expired") for m in warnings), warnings
    assert sum(m.startswith("store_stall: S3 put x") for m in warnings) == 2  # once per attempt
    reuse = [m for m in warnings if m.startswith("takeover: attempt 2 reused")]
    assert len(reuse) == 1 and int(reuse[0].split("reused ")[1].split(" ")[0]) >= 4, reuse
    assert events[-1].type == "FINISHED"
    assert done.summary["faults_takeover"] == "2" and done.summary["faults_store_stall"] == "1"
    report = store.get(done.report["uri"]).decode()
    assert "Faults survived" in report and "took over from replica-a" in report and "S3 put x" in report


def test_a_job_without_faults_says_so(replica_env):
    _, _, store = replica_env
    done = run_alone(replica_env)
    assert done.state == "SUCCEEDED" and not any(k.startswith("faults_") for k in done.summary)
    assert "none: no retried call" in store.get(done.report["uri"]).decode()



def test_a_stall_inside_a_service_reaches_the_callers_job():
    """The service's store stalled while serving the call (reported from a worker thread there);
    the fault travels back in the `likeness-faults` trailer and the client reports it in turn."""
    from likeness.api.v1 import detection_pb2_grpc
    from likeness.core.server import Service, ServiceRuntime
    from likeness.core.settings import CommonSettings

    class Stalling(detection_pb2_grpc.DetectionServiceServicer):
        async def Assess(self, request, context):
            await asyncio.to_thread(faults.report, "store_stall", "S3 get img.png: stalled 10.2s, 9 retries")
            return detection_pb2.AssessResponse(backend="stalled")

    async def scenario():
        runtime = ServiceRuntime(Service("detection", [(detection_pb2_grpc.add_DetectionServiceServicer_to_server,
                                                        Stalling())], ["likeness.v1.DetectionService"]),
                                 CommonSettings(port=0, metrics_enabled=False, drain_seconds=0))
        port = await runtime.start()
        try:
            return await _assess_collecting_faults(port, OrchestratorSettings())
        finally:
            await runtime.stop(grace=0)

    response, got = asyncio.run(scenario())
    assert response.backend == "stalled"
    assert got == [faults.Fault("store_stall", "in detection.Assess: S3 get img.png: stalled 10.2s, 9 retries")]


def test_trailer_is_bounded_and_tolerant():
    many = [faults.Fault("store_stall", "x" * 1000)] * 20
    decoded = faults.decode(faults.encode(many))
    assert len(decoded) == faults.MAX_SENT + 1 and decoded[-1].kind == "more"
    assert all(len(f.message) <= faults.MAX_MESSAGE for f in decoded)
    assert faults.decode("not json") == [] and faults.decode("[[1]]") == []


def test_a_slow_store_call_without_errors_is_a_stall(monkeypatch):
    from likeness.core import store_s3

    monkeypatch.setattr(store_s3, "STALL_SECONDS", 0.05)
    store = S3Store(client=None, bucket="likeness", retry_seconds=30, endpoint="127.0.0.1:1")

    def frozen_then_fine():
        import time
        time.sleep(0.1)
        return b"ok"

    result, got = collected(lambda: store._call("get k", frozen_then_fine))
    assert result == b"ok" and "S3 get k: stalled 0.1s, 0 retries (last error none)" in got[0].message
