"""SQLAlchemy engines and Alembic migrations for the stores that keep state in a database (the
orchestrator's job store, the training run registry): SQLite embedded, PostgreSQL in a cluster."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # WAL + NORMAL: a commit is not fsynced, but the database cannot be corrupted; a crash
            # loses at most the last writes, which a resumed job or run writes again
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def migrate(engine: Engine, script_location: Path, lock_id: int) -> None:
    """Upgrades the schema to the newest revision; replicas starting together on PostgreSQL take
    an advisory lock and migrate one at a time. The migrations' env.py reads the open connection
    from `config.attributes["connection"]` (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
