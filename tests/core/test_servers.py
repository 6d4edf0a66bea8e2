"""The test servers themselves: PostgreSQL answers SQL (incl. SKIP LOCKED), SeaweedFS stops cleanly."""

from __future__ import annotations

import os

import pytest

from tests.servers import SeaweedServer


@pytest.mark.postgres
def test_postgres_url_is_a_working_server(postgres_url):
    import sqlalchemy as sa

    assert postgres_url.startswith("postgresql+psycopg://") and "127.0.0.1" in postgres_url
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS fixture_probe (id int PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO fixture_probe VALUES (1), (2) ON CONFLICT DO NOTHING"))
        with engine.connect() as a, engine.connect() as b:
            ta, tb = a.begin(), b.begin()
            first = a.execute(
                sa.text("SELECT id FROM fixture_probe ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
            )
            second = b.execute(
                sa.text("SELECT id FROM fixture_probe ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
            )
            assert (first.scalar(), second.scalar()) == (1, 2)
            ta.rollback()
            tb.rollback()
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE fixture_probe"))
    finally:
        engine.dispose()


@pytest.mark.s3
def test_seaweed_server_stops_its_whole_process_group(tmp_path):
    server = SeaweedServer(tmp_path)
    try:
        server.start()
        server.client().make_bucket("probe")
    finally:
        server.stop()
    assert server.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(server.proc.pid, 0)  # no process of the group is left
