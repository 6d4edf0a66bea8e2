"""Shared fixtures: a local artifact store, a real SeaweedFS S3 server, a real PostgreSQL server.

The servers are started once per test session on free loopback ports, in temp folders, and are
stopped (whole process group) at the end. A missing server binary fails loudly: `make test`
installs everything (tools/install_sysdeps.sh), so a skip would only hide a broken setup.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tmp_store(tmp_path: Path):
    """A LocalStore in a fresh temp folder (`store.root` is the folder)."""
    from likeness.core.store_local import LocalStore

    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real SeaweedFS S3 server (`weed mini`) on 127.0.0.1: yields a `SeaweedServer` with
    `endpoint`, `access_key`, `secret_key`, `settings(bucket, **overrides)` and `client()`."""
    from tests.servers import SeaweedServer

    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """`postgresql+psycopg://likeness@127.0.0.1:<port>/likeness` of a throwaway PostgreSQL."""
    from tests.servers import PostgresServer

    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
