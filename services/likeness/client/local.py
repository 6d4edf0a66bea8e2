"""Every service as a separate process on loopback: what `likeness up` and `make demo` run.

Each process gets the same LIKENESS_* variables a pod gets from the chart, pointed at one state
folder (artifact store, model repository, SQLite job store and run registry), so the embedded
stack exercises the same code paths as the cluster one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from likeness.core.channels import health_status as health
from likeness.core.settings import PORTS

ORDER = ("detection", "embedding", "restoration", "generation", "training", "orchestrator")


@dataclass
class Proc:
    name: str
    port: int
    process: subprocess.Popen | None
    pid: int
    log: Path


def stack_env(state: Path, base_port: int = 0, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment shared by every service of a local stack rooted at `state`."""
    state = state.resolve()
    ports = {name: (base_port + i if base_port else port) for i, (name, port) in enumerate(PORTS.items())}
    env = {
        "LIKENESS_HOST": "127.0.0.1",
        "LIKENESS_STORE_URI": f"file://{state}/store",
        "LIKENESS_MODEL_REPOSITORY": f"file://{state}/models",
        "LIKENESS_MODEL_CACHE_DIR": str(state / "model-cache"),
        "LIKENESS_ORCHESTRATOR_DATABASE_URL": f"sqlite:///{state}/orchestrator.db",
        "LIKENESS_TRAINING_DATABASE_URL": f"sqlite:///{state}/training.db",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name, port in ports.items():
        env[f"LIKENESS_ORCHESTRATOR_{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
        env[f"LIKENESS_TRAINING_{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
    env["_LIKENESS_PORTS"] = json.dumps(ports)
    env.update(extra or {})
    return env


class LocalStack:
    def __init__(self, state: Path, services: tuple[str, ...] = ORDER, base_port: int = 0,
                 extra_env: dict[str, str] | None = None):
        self.state = state.resolve()
        self.services = services
        self.env = stack_env(self.state, base_port, extra_env)
        self.ports: dict[str, int] = json.loads(self.env["_LIKENESS_PORTS"])
        self.procs: dict[str, Proc] = {}
        (self.state / "logs").mkdir(parents=True, exist_ok=True)

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def start(self, name: str) -> Proc:
        log = self.state / "logs" / f"{name}.log"
        env = {**os.environ, **self.env, "LIKENESS_PORT": str(self.ports[name]),
               "LIKENESS_METRICS_PORT": str(self.ports[name] + 1000)}
        p = subprocess.Popen([sys.executable, "-m", "likeness", "serve", name], env=env, stdout=open(log, "ab"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = Proc(name, self.ports[name], p, p.pid, log)
        return self.procs[name]

    def wait_serving(self, names=None, timeout: float = 300.0, on_tick=None) -> None:
        pending = set(names or self.services)
        deadline = time.monotonic() + timeout
        while pending:
            for name in sorted(pending):
                proc = self.procs[name].process
                if proc is not None and proc.poll() is not None:
                    tail = self.procs[name].log.read_text(errors="replace")[-4000:]
                    raise RuntimeError(f"{name} exited with code {proc.returncode}; last log lines:\n{tail}")
                if health(self.address(name)) == "SERVING":
                    pending.discard(name)
            if on_tick:
                on_tick(sorted(set(names or self.services) - pending))
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not SERVING after {timeout:.0f}s: {', '.join(sorted(pending))} "
                                   f"(logs in {self.state / 'logs'})")
            time.sleep(0.3)

    def up(self, timeout: float = 300.0, on_tick=None) -> None:
        for name in self.services:
            self.start(name)
        self.write_pids()
        self.wait_serving(timeout=timeout, on_tick=on_tick)

    def write_pids(self) -> None:
        (self.state / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))

    def stop(self, name: str, timeout: float = 30.0) -> None:
        p = self.procs.pop(name, None)
        if p is None:
            return
        stop_pid(p.pid, timeout)

    def down(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)
        (self.state / "pids.json").unlink(missing_ok=True)


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM (graceful: drain, finish in-flight calls), then SIGKILL after `timeout`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            if _reap(pid):
                return
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        return False


def down_from_pidfile(state: Path) -> list[str]:
    path = state / "pids.json"
    if not path.exists():
        return []
    pids = json.loads(path.read_text())
    for pid in pids.values():
        stop_pid(pid)
    path.unlink(missing_ok=True)
    return list(pids)
