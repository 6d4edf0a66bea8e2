"""LIKENESS_AUTH_TOKEN turns on bearer-token auth for any service: its API refuses calls without
the token, health and reflection stay open as LIKENESS_AUTH_EXEMPT says, the metrics endpoint asks
for the token when it is not exempt, and channels built by core.channels send the token."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import grpc
import pytest

from likeness.api.v1 import generation_pb2, generation_pb2_grpc
from likeness.core.channels import aio_channel, health_status
from likeness.core.settings import CommonSettings
from tests.core.test_limits import bare_runtime

TOKEN = "model-services-token"


def settings(**kw) -> CommonSettings:
    return CommonSettings(port=0, metrics_port=0, drain_seconds=0, auth_token=TOKEN, **kw)


def list_models(port: int, metadata=()) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            generation_pb2_grpc.GenerationServiceStub(ch).ListModels(generation_pb2.ListModelsRequest(),
                                                                     metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name
    return "OK"


def scrape(port: int, token: str = "") -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_token_required_health_open_metrics_guarded():
    with bare_runtime(settings(auth_exempt="health,reflection")) as runtime:
        assert list_models(runtime.port) == "UNAUTHENTICATED"
        assert list_models(runtime.port, (("authorization", "Bearer wrong"),)) == "UNAUTHENTICATED"
        # past auth, the base servicer answers UNIMPLEMENTED
        assert list_models(runtime.port, (("authorization", f"Bearer {TOKEN}"),)) == "UNIMPLEMENTED"
        assert health_status(f"127.0.0.1:{runtime.port}") == "NOT_SERVING"  # open (not warmed up here)
        assert scrape(runtime.metrics_port) == 401
        assert scrape(runtime.metrics_port, "wrong") == 401
        assert scrape(runtime.metrics_port, TOKEN) == 200

        async def through_channel():  # what the orchestrator and training use to call services
            async with aio_channel(f"127.0.0.1:{runtime.port}", settings()) as ch:
                try:
                    await generation_pb2_grpc.GenerationServiceStub(ch).ListModels(
                        generation_pb2.ListModelsRequest(), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name

        assert asyncio.run(through_channel()) == "UNIMPLEMENTED"


def test_nothing_exempt_closes_health_and_default_keeps_metrics_open():
    with bare_runtime(settings(auth_exempt="")) as runtime:
        assert health_status(f"127.0.0.1:{runtime.port}") == "UNAUTHENTICATED"
    with bare_runtime(settings()) as runtime:
        assert scrape(runtime.metrics_port) == 200
        assert list_models(runtime.port) == "UNAUTHENTICATED"


def test_bad_exempt_value_is_refused():
    with pytest.raises(ValueError, match="auth_exempt"):
        CommonSettings(auth_exempt="health,everything")
