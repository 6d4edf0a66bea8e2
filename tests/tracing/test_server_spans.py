"""The server runtime with tracing on, in-process: a SERVER span per call under the caller's span,
status ERROR only for server faults, health checks untraced, the call's trace id in its log line
and as the exemplar of its latency bucket (OpenMetrics)."""

from __future__ import annotations

import io
import json
import logging

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.exposition import generate_latest

from likeness.api.v1 import common_pb2, detection_pb2, detection_pb2_grpc, generation_pb2, generation_pb2_grpc
from likeness.core import errors, tracing
from likeness.core.channels import sync_channel
from likeness.core.logging import JsonFormatter
from likeness.core.server import Service
from likeness.core.settings import CommonSettings
from tests.helpers import ServiceThread, health_status, wait_for


class Generation(generation_pb2_grpc.GenerationServiceServicer):
    async def ListModels(self, request, context):
        with tracing.span("store.get"):
            return generation_pb2.ListModelsResponse()


class Detection(detection_pb2_grpc.DetectionServiceServicer):
    async def Detect(self, request, context):
        if request.images[0].uri == "bad":
            raise errors.InvalidArgument("images[0].uri", "is bad")
        raise RuntimeError("a bug")


@pytest.fixture(scope="module")
def traced_server():
    exported = InMemorySpanExporter()
    settings = CommonSettings(port=0, metrics_port=0, tracing_enabled=True, tracing_sample_ratio=1.0, log_calls="all")
    tracing.configure("test", settings, exporter=exported)
    names = [generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name,
             detection_pb2.DESCRIPTOR.services_by_name["DetectionService"].full_name]
    service = Service("test", [(generation_pb2_grpc.add_GenerationServiceServicer_to_server, Generation()),
                               (detection_pb2_grpc.add_DetectionServiceServicer_to_server, Detection())], names)
    try:
        with ServiceThread(service, settings) as server:
            yield server, exported
    finally:
        tracing.shutdown()


def spans_of(exported, trace_id: str):
    tracing.flush()
    return {(s.name, s.kind): s for s in exported.get_finished_spans()
            if format_trace_id(s.context.trace_id) == trace_id}


def test_a_call_is_a_server_span_under_the_callers_span(traced_server):
    server, exported = traced_server
    with tracing.span_under("caller", ""), sync_channel(server.address) as channel:
        trace_id = tracing.current_trace_id()
        generation_pb2_grpc.GenerationServiceStub(channel).ListModels(generation_pb2.ListModelsRequest())
    spans = spans_of(exported, trace_id)
    name = "/likeness.v1.GenerationService/ListModels"
    client, server_span = (spans[(name, kind)] for kind in (SpanKind.CLIENT, SpanKind.SERVER))
    assert server_span.parent.span_id == client.context.span_id
    assert client.parent.span_id == spans[("caller", SpanKind.INTERNAL)].context.span_id
    assert spans[("store.get", SpanKind.INTERNAL)].parent.span_id == server_span.context.span_id
    assert server_span.attributes["rpc.method"] == "ListModels" and server_span.attributes["rpc.grpc.status_code"] == 0


def test_server_faults_are_errors_and_caller_faults_are_not(traced_server):
    server, exported = traced_server
    with server.channel() as channel:
        stub = detection_pb2_grpc.DetectionServiceStub(channel)
        # an unexpected exception is INTERNAL (with the request id), never gRPC's UNKNOWN
        for uri, code in (("bad", grpc.StatusCode.INVALID_ARGUMENT), ("boom", grpc.StatusCode.INTERNAL)):
            with pytest.raises(grpc.RpcError) as exc:
                stub.Detect(detection_pb2.DetectRequest(images=[common_pb2.ImageInput(uri=uri)]))
            assert exc.value.code() is code
    def detect_spans():  # an aborted call's span ends just after its status reached the caller
        tracing.flush()
        found = [s for s in exported.get_finished_spans() if s.name.endswith("/Detect")][-2:]
        return found if len(found) == 2 else None

    detect = wait_for(detect_spans, timeout=10, interval=0.05, what="both Detect spans")
    assert [s.attributes["rpc.grpc.status_code"] for s in detect] == [3, 13]
    assert detect[0].status.status_code is StatusCode.UNSET, "INVALID_ARGUMENT is the caller's fault"
    assert detect[1].status.status_code is StatusCode.ERROR and detect[1].events[0].name == "exception"


def test_health_checks_are_not_traced(traced_server):
    server, exported = traced_server
    tracing.flush()
    before = len(exported.get_finished_spans())
    assert health_status(server.port) == "SERVING"
    tracing.flush()
    assert len(exported.get_finished_spans()) == before


def test_log_lines_and_exemplars_name_the_call(traced_server):
    server, exported = traced_server
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("likeness.rpc")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with server.channel() as channel:
            generation_pb2_grpc.GenerationServiceStub(channel).ListModels(generation_pb2.ListModelsRequest())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    tracing.flush()
    span = [s for s in exported.get_finished_spans() if s.name.endswith("/ListModels")][-1]
    trace_id, span_id = format_trace_id(span.context.trace_id), format_span_id(span.context.span_id)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert (line["msg"], line["trace_id"], line["span_id"]) == ("rpc", trace_id, span_id)
    exposition = generate_latest(REGISTRY).decode()
    buckets = [b for b in exposition.splitlines() if b.startswith("likeness_rpc_duration_seconds_bucket{")
               and 'method="ListModels"' in b and "# {" in b]
    assert any(f'trace_id="{trace_id}"' in b for b in buckets)


def test_bearer_auth_still_decides_every_call_with_tracing_on():
    """The span interceptor sits before auth and reuses wrapped handlers: a rejected call must not
    be cached as the method's handler, nor an accepted one let the next call through."""
    from likeness.core.auth import BearerTokenInterceptor

    settings = CommonSettings(port=0, metrics_port=0, tracing_enabled=True, tracing_sample_ratio=1.0)
    tracing.configure("test", settings, exporter=InMemorySpanExporter())
    service = Service("test", [(generation_pb2_grpc.add_GenerationServiceServicer_to_server, Generation())],
                      [generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name])
    try:
        with ServiceThread(service, settings, interceptors=[BearerTokenInterceptor("s3cret")]) as server, \
                server.channel() as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            for token, ok in (("", False), ("s3cret", True), ("", False), ("wrong", False), ("s3cret", True)):
                metadata = (("authorization", f"Bearer {token}"),) if token else ()
                try:
                    stub.ListModels(generation_pb2.ListModelsRequest(), metadata=metadata)
                    assert ok, f"token {token!r} was let through"
                except grpc.RpcError as exc:
                    assert not ok and exc.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        tracing.shutdown()
