"""gRPC conventions other tools rely on: a call whose deadline passed is DEADLINE_EXCEEDED (not
CANCELLED) in metrics and logs, reflection answers under v1 and v1alpha, back-off hints travel in
`grpc-retry-pushback-ms` (which gRPC's own retries honour), and the liveness health name stays
SERVING while readiness is NOT_SERVING."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import threading
import time

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from likeness.api.v1 import generation_pb2, generation_pb2_grpc
from likeness.core import errors, metrics
from likeness.core.channels import channel_options, service_config
from likeness.core.server import LIVENESS, Service
from likeness.core.settings import CommonSettings
from likeness.orchestrator.clients import pushback_seconds
from tests.helpers import ROOT, ServiceThread, health_status

SERVICE = "likeness.v1.GenerationService"
PUSHBACK_S = 0.6


class Servicer(generation_pb2_grpc.GenerationServiceServicer):
    """ListModels sleeps (a call in flight); Generate answers RESOURCE_EXHAUSTED twice, then OK."""

    def __init__(self):
        self.attempts: list[float] = []

    async def ListModels(self, request, context):
        await asyncio.sleep(3)
        return generation_pb2.ListModelsResponse()

    async def Generate(self, request, context):
        self.attempts.append(time.monotonic())
        if len(self.attempts) < 3:
            raise errors.ResourceExhausted("queue", "queue is full", retry_after_seconds=PUSHBACK_S)
        return generation_pb2.GenerateResponse()


@pytest.fixture
def served():
    servicer = Servicer()
    service = Service("generation", [(generation_pb2_grpc.add_GenerationServiceServicer_to_server, servicer)],
                      [SERVICE])
    settings = CommonSettings(port=0, metrics_enabled=False, log_calls="all")
    with ServiceThread(service, settings) as thread:
        yield thread, servicer


def count(code: str) -> float:
    return sum(
        s.value for m in metrics.RPC_DURATION.collect() for s in m.samples
        if s.name.endswith("_count") and s.labels == {"service": "GenerationService", "method": "ListModels",
                                                       "code": code})


def test_expired_deadline_is_deadline_exceeded_and_a_cancel_is_cancelled(served, caplog):
    thread, _ = served
    before = {code: count(code) for code in ("DEADLINE_EXCEEDED", "CANCELLED")}
    caplog.set_level(logging.INFO, logger="likeness.rpc")
    with thread.channel() as ch:
        stub = generation_pb2_grpc.GenerationServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListModels(generation_pb2.ListModelsRequest(), timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        future = stub.ListModels.future(generation_pb2.ListModelsRequest(), timeout=30)
        time.sleep(0.3)
        future.cancel()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (count("DEADLINE_EXCEEDED") == before["DEADLINE_EXCEEDED"]
                                           or count("CANCELLED") == before["CANCELLED"]):
        time.sleep(0.05)
    assert count("DEADLINE_EXCEEDED") == before["DEADLINE_EXCEEDED"] + 1
    assert count("CANCELLED") == before["CANCELLED"] + 1
    codes = [r.code for r in caplog.records if getattr(r, "method", "") == "GenerationService/ListModels"]
    assert "DEADLINE_EXCEEDED" in codes and "CANCELLED" in codes
    expired = next(r for r in caplog.records if getattr(r, "code", "") == "DEADLINE_EXCEEDED")
    assert expired.levelno == logging.WARNING


def reflect(channel: grpc.Channel, version: str, request: reflection_pb2.ServerReflectionRequest):
    call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                 request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    return next(iter(call(iter([request]), timeout=10)))


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_answers_under_v1_and_v1alpha(served, version):
    from google.protobuf import descriptor_pb2

    thread, _ = served
    with thread.channel() as ch:
        listed = reflect(ch, version, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"} <= names
        for symbol, file_name in ((SERVICE, "likeness/v1/generation.proto"),
                                  ("grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto")):
            found = reflect(ch, version, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
            assert not found.HasField("error_response"), found.error_response.error_message
            files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                     for b in found.file_descriptor_response.file_descriptor_proto]
            assert file_name in {f.name for f in files}
        v1 = next(f for f in files if f.name == "grpc/reflection/v1/reflection.proto")
        method = v1.service[0].method[0]
        assert (v1.package, method.input_type) == ("grpc.reflection.v1", ".grpc.reflection.v1.ServerReflectionRequest")


def test_pushback_trailer_paces_grpc_own_retries(served):
    """A plain channel with a retry policy (the one docs/api.md gives other languages) retries
    RESOURCE_EXHAUSTED after the server's pushback, not after its own 0.1 s initial back-off."""
    thread, servicer = served
    with grpc.insecure_channel(thread.address, options=channel_options(None, max_attempts=5)) as ch:
        stub = generation_pb2_grpc.GenerationServiceStub(ch)
        stub.Generate(generation_pb2.GenerateRequest(), timeout=20)
    assert len(servicer.attempts) == 3, "the channel retried until the third attempt succeeded"
    gaps = [b - a for a, b in itertools.pairwise(servicer.attempts)]
    assert min(gaps) >= PUSHBACK_S * 0.9, gaps
    # without a retry policy the caller sees the status and the hint itself
    servicer.attempts.clear()
    with grpc.insecure_channel(thread.address, options=channel_options(None, max_attempts=1)) as ch:
        with pytest.raises(grpc.RpcError) as err:
            generation_pb2_grpc.GenerationServiceStub(ch).Generate(generation_pb2.GenerateRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(err.value.trailing_metadata())
    assert trailers["grpc-retry-pushback-ms"] == str(round(PUSHBACK_S * 1000))
    assert pushback_seconds(err.value.trailing_metadata()) == PUSHBACK_S


def test_orchestrator_reads_the_pushback_hint():
    assert pushback_seconds((("grpc-retry-pushback-ms", "1500"),)) == 1.5
    assert pushback_seconds((("grpc-retry-pushback-ms", "-1"),)) == 0.0  # "do not retry": no extra wait
    assert pushback_seconds(()) == 0.0 and pushback_seconds(None) == 0.0


def test_liveness_stays_serving_while_not_ready_and_busy():
    servicer = Servicer()
    service = Service("generation", [(generation_pb2_grpc.add_GenerationServiceServicer_to_server, servicer)],
                      [SERVICE])
    settings = CommonSettings(port=0, metrics_enabled=False)
    with ServiceThread(service, settings, warm=False, drain_seconds=1.0) as thread:
        assert health_status(thread.port) == "NOT_SERVING"  # warming up: not ready
        assert health_status(thread.port, LIVENESS) == "SERVING"
        thread.call(thread.runtime.warm())
        assert health_status(thread.port) == "SERVING"
        with thread.channel() as ch:  # busy: a call in flight
            busy = generation_pb2_grpc.GenerationServiceStub(ch).ListModels.future(
                generation_pb2.ListModelsRequest(), timeout=30)
            time.sleep(0.2)
            assert health_status(thread.port, LIVENESS) == "SERVING"
            stopping = threading.Thread(target=thread.call, args=(thread.runtime.stop(grace=5),))
            stopping.start()  # draining: readiness NOT_SERVING, liveness still SERVING
            time.sleep(0.3)
            assert health_status(thread.port) == "NOT_SERVING"
            assert health_status(thread.port, LIVENESS) == "SERVING"
            busy.result(30)
            stopping.join(30)


def test_api_guide_gives_other_languages_the_service_config_the_code_uses():
    guide = (ROOT / "docs" / "api.md").read_text()
    section = guide[guide.index("## Calling from other languages"):]
    documented = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    assert documented == json.loads(service_config())
