"""A real local stack for end-to-end tests: every service as its own process on loopback."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest

from likeness.client.jobs_client import JobsClient
from likeness.client.local import LocalStack
from tests.helpers import ServiceProcess


def _ports_free(ports: list[int]) -> bool:
    socks = []
    try:
        for p in ports:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def _free_block(n: int = 6) -> int:
    """A base port whose n gRPC ports and n metrics ports (+1000) are all free."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        if _ports_free([base + i for i in range(n)] + [base + 1000 + i for i in range(n)]):
            return base
    raise RuntimeError("no free block of ports")


FAST_LEASES = {"LIKENESS_ORCHESTRATOR_LEASE_SECONDS": "3", "LIKENESS_ORCHESTRATOR_HEARTBEAT_SECONDS": "0.5",
               "LIKENESS_ORCHESTRATOR_POLL_SECONDS": "0.2", "LIKENESS_DRAIN_SECONDS": "0"}


@pytest.fixture(scope="session")
def e2e_stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("stack"), base_port=_free_block(), extra_env=FAST_LEASES)
    try:
        stack.up(timeout=600)
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def jobs_client(e2e_stack):
    client = JobsClient(e2e_stack.address("orchestrator"))
    yield client
    client.close()


@pytest.fixture(scope="session")
def clip_jobs_client(e2e_stack, tmp_path_factory):
    """A second orchestrator whose embedding service has a text tower (open_clip `tiny-clip`, random
    weights), so the storyboard's CLIP validator runs; everything else is the shared stack."""
    state: Path = e2e_stack.state
    # PYTHONPATH as the suite's: a checkout other than the installed one must serve its own code
    env = {**e2e_stack.env, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "LIKENESS_EMBEDDING_ENCODER": "open_clip",
           "LIKENESS_EMBEDDING_OPEN_CLIP_MODEL": "tiny-clip",
           "LIKENESS_EMBEDDING_BUILD_TINY": "true"}
    log_dir = tmp_path_factory.mktemp("clip")
    embedding = ServiceProcess("embedding", env, log_path=log_dir / "embedding.log").wait_serving(300)
    env_o = {**env, "LIKENESS_ORCHESTRATOR_EMBEDDING_ADDRESS": embedding.address,
             "LIKENESS_ORCHESTRATOR_DATABASE_URL": f"sqlite:///{state}/orchestrator-clip.db"}
    orchestrator = ServiceProcess("orchestrator", env_o, log_path=log_dir / "orchestrator.log").wait_serving(120)
    client = JobsClient(orchestrator.address)
    yield client
    client.close()
    orchestrator.stop()
    embedding.stop()



@pytest.fixture(scope="session")
def demo_candidates(e2e_stack, tmp_path_factory):
    """The demo candidate set (real photos, every rejection reason), uploaded to the stack's store.
    Returns (store URI of the set, DemoSet)."""
    from likeness.core.settings import CommonSettings
    from likeness.core.store import open_store

    store = open_store(CommonSettings(store_uri=e2e_stack.env["LIKENESS_STORE_URI"]))
    return upload_demo_set(store, tmp_path_factory.mktemp("demo") / "set", "demo-candidates/")


def upload_demo_set(store, root: Path, prefix: str):
    """Builds the demo set under `root` and uploads it under `prefix`: (URI of the set, DemoSet)."""
    from likeness.client.demo_set import build_demo_set

    demo = build_demo_set(root)
    for item in demo.items:
        store.put_file(f"{prefix}{item.path}", root / item.path, "image/png")
    return store.uri(prefix), demo


def demo_curate_spec(uri: str, demo, output_prefix: str):
    from likeness.client.demo import curate_spec

    spec = curate_spec(uri, len({i.seed for i in demo.items}), demo.min_quality)
    spec.curate.output_prefix = output_prefix
    return spec
