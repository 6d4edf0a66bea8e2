"""Keepalive: a long call with our client's pings in flight survives on our server's options.

The intervals are shrunk (the module constant both sides read) so that a 10 s call carries many pings.
Without the server's ping allowance the server answers them with GOAWAY "too_many_pings"; the client's
retry policy then re-sends the call (a long generation done twice) until its attempts run out.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from likeness.core import channels
from likeness.core.server import server_options
from likeness.core.settings import CommonSettings

pytestmark = pytest.mark.slow


async def _long_call(server_opts: list, seconds: float, max_attempts: int) -> tuple[grpc.StatusCode, int]:
    """(status of one call that sends nothing for `seconds`, how many times the server ran it)."""
    runs = 0

    async def handler(request, context):
        nonlocal runs
        runs += 1
        await asyncio.sleep(seconds)
        return b"done"

    server = grpc.aio.server(options=server_opts)
    methods = {"Slow": grpc.unary_unary_rpc_method_handler(handler)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Keepalive", methods),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    options = channels.channel_options(None, max_attempts=max_attempts)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            try:
                await channel.unary_unary("/test.Keepalive/Slow")(b"go")
            except grpc.aio.AioRpcError as e:
                return e.code(), runs
            return grpc.StatusCode.OK, runs
    finally:
        await server.stop(0)


def test_long_call_with_keepalive_pings_runs_once_and_succeeds(monkeypatch):
    monkeypatch.setattr(channels, "KEEPALIVE_TIME_MS", 500)
    ours = server_options(CommonSettings(port=0, metrics_enabled=False))
    assert asyncio.run(_long_call(ours, 10.0, max_attempts=5)) == (grpc.StatusCode.OK, 1)


def test_default_ping_policy_cuts_the_same_call(monkeypatch):
    monkeypatch.setattr(channels, "KEEPALIVE_TIME_MS", 500)
    code, _ = asyncio.run(_long_call([], 10.0, max_attempts=1))
    assert code == grpc.StatusCode.UNAVAILABLE
