"""Test helpers: free ports, services in a background thread or a real process, health checks."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

from likeness.core import channels

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health_status(port: int, service: str = "", timeout: float = 2.0) -> str:
    """`SERVING`, `NOT_SERVING`, ... or the gRPC error code name when the call fails."""
    return channels.health_status(f"127.0.0.1:{port}", service, timeout)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class ServiceThread:
    """Runs a `Service` on its own event loop in a background thread (fast in-process tests)."""

    def __init__(self, service, settings, *, warm: bool = True, drain_seconds: float = 0.0, interceptors=None):
        from likeness.core.server import ServiceRuntime

        self._service, self._settings, self._warm = service, settings, warm
        self._interceptors = interceptors
        self._drain = drain_seconds
        self._runtime_cls = ServiceRuntime
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runtime = None
        self.port = 0

    def call(self, coro, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self):
        self.thread.start()

        async def build():
            return self._runtime_cls(self._service, self._settings, drain_seconds=self._drain,
                                     interceptors=self._interceptors)

        self.runtime = self.call(build())
        self.port = self.call(self.runtime.start())
        if self._warm:
            self.call(self.runtime.warm())
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        return grpc.insecure_channel(self.address, options=opts)

    def __exit__(self, *exc):
        try:
            self.call(self.runtime.stop(grace=1.0), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def service_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "LIKENESS_HOST": "127.0.0.1"})
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class ServiceProcess:
    """A real `python -m likeness serve NAME` process; waits for SERVING; stops with SIGTERM."""

    def __init__(self, name: str, env: dict[str, str], port: int | None = None, log_path: Path | None = None,
                 host: str = "127.0.0.1"):
        self.name, self.host = name, host  # another loopback address (127.0.0.2) is another "pod"
        self.port = port or free_port()
        self.metrics_port = free_port()
        env = {**env, "LIKENESS_PORT": str(self.port), "LIKENESS_METRICS_PORT": str(self.metrics_port),
               "LIKENESS_HOST": host}
        self.log_path = log_path
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "likeness", "serve", name], env=env,
                                     stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def wait_serving(self, timeout: float = 120.0) -> ServiceProcess:
        def ready():
            if self.proc.poll() is not None:
                tail = self.log_path.read_text()[-3000:] if self.log_path else ""
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {tail}")
            return channels.health_status(self.address, timeout=1.0) == "SERVING"

        wait_for(ready, timeout, 0.2, f"{self.name} SERVING")
        return self

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def served_calls(replica: ServiceProcess, method: str) -> int:
    """Calls of `method` a service process answered, from its own /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{replica.host}:{replica.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return int(sum(s.value for f in text_string_to_metric_families(text) if f.name == "likeness_rpc_duration_seconds"
                   for s in f.samples if s.name.endswith("_count") and s.labels.get("method") == method))


def spawn_service(name: str, env: dict[str, str], tmp_path: Path, timeout: float = 120.0) -> ServiceProcess:
    return ServiceProcess(name, env, log_path=tmp_path / f"{name}.log").wait_serving(timeout)


def startup_failure(name: str, env: dict[str, str], tmp_path: Path, timeout: float = 60.0) -> str:
    """Starts `likeness serve NAME`, which must exit non-zero before SERVING; returns its output
    with all whitespace removed (long paths wrap in the log tail)."""
    import pytest

    proc = ServiceProcess(name, env, log_path=tmp_path / f"{name}.log")
    with pytest.raises(RuntimeError) as exc:
        proc.wait_serving(timeout=timeout)
    assert proc.proc.returncode != 0
    return "".join(str(exc.value).split())


def model_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Environment of a service whose store, model repository and cache are empty temp folders."""
    return service_env(LIKENESS_STORE_URI=f"file://{tmp_path}/store", LIKENESS_MODEL_REPOSITORY=str(tmp_path / "models"),
                       LIKENESS_MODEL_CACHE_DIR=str(tmp_path / "cache"), **overrides)
