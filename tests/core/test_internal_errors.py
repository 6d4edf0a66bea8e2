"""An unexpected exception in a servicer reaches the caller as INTERNAL (not gRPC's UNKNOWN) with the
request id the caller sent, so the traceback can be found in the service log; the service stays up."""

from __future__ import annotations

import grpc

from likeness.api.v1 import generation_pb2, generation_pb2_grpc
from likeness.core.server import Service
from likeness.core.settings import CommonSettings
from tests.helpers import ServiceThread


class Broken(generation_pb2_grpc.GenerationServiceServicer):
    async def ListModels(self, request, context):
        raise KeyError("a bug")

    async def GenerateStream(self, request, context):
        yield generation_pb2.GenerateStreamResponse()
        raise ZeroDivisionError("a bug mid-stream")


def test_unexpected_exceptions_are_internal_with_the_request_id():
    service = Service(name="broken",
                      servicers=[(generation_pb2_grpc.add_GenerationServiceServicer_to_server, Broken())],
                      service_names=["likeness.v1.GenerationService"])
    settings = CommonSettings(port=0, metrics_port=0)
    with ServiceThread(service, settings) as svc, grpc.insecure_channel(f"127.0.0.1:{svc.port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        for call in (lambda md: stub.ListModels(generation_pb2.ListModelsRequest(), metadata=md, timeout=10),
                     lambda md: list(stub.GenerateStream(generation_pb2.GenerateStreamRequest(), metadata=md,
                                                         timeout=10))):
            try:
                call((("x-request-id", "req-1234"),))
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INTERNAL, exc
                assert "request id req-1234" in exc.details() and "internal error" in exc.details()
                assert "a bug" not in exc.details()  # the exception's text stays in the log
            else:
                raise AssertionError("the call should have failed")
