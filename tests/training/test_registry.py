"""The run registry on SQLite (embedded) and on a real PostgreSQL server, through the Alembic
migrations that ship in the package."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa

from likeness.core.errors import FailedPrecondition, NotFound
from likeness.training.registry import RunRegistry, SkippedItem
from likeness.training.registry.models import Base
from likeness.training.spec import RunSpec
from tests.training.factories import add_run, artifact, resolved_spec


def _exercise(reg: RunRegistry) -> None:
    run = add_run(reg, "run-1", rank=8)
    got = reg.get("run-1")
    assert RunSpec.from_dict(got.spec) == resolved_spec("run-1", rank=8)  # round trip
    assert got.spec["rank"] == 8 and got.spec["alpha"] == 8.0 and "alpha" in got.spec["defaulted"]
    assert [p.step for p in got.loss] == [1, 2, 3, 4, 5, 6] and got.loss[0].loss == 0.5
    assert got.state == "succeeded" and got.best_epoch == 1 and got.checkpoints[0].best
    assert math.isnan(got.checkpoints[0].clip_score)  # never measured -> NaN, not 0
    assert got.checkpoints[0].diffusers_weights == artifact("d", 1000)
    assert got.created_at.tzinfo is not None and got.finished_at >= got.started_at
    assert run.dataset_digest == "d" * 64 and run.captions_digest == "c" * 64

    reg.create_run("run-2", resolved_spec("run-2").to_dict(), executor="in_process",
                   skipped=[SkippedItem("file:///x/bad.png", "corrupt image: truncated PNG")])
    assert [r.run_id for r in reg.list()] == ["run-2", "run-1"]  # newest first
    assert [r.run_id for r in reg.list(state="succeeded")] == ["run-1"]
    assert reg.get("run-2").skipped == [SkippedItem("file:///x/bad.png", "corrupt image: truncated PNG")]

    # cancelling a queued run ends it at once; a finished run cannot be cancelled
    assert reg.request_cancel("run-2").state == "cancelled"
    with pytest.raises(FailedPrecondition, match="already ended"):
        reg.request_cancel("run-1")
    with pytest.raises(NotFound, match="no run 'nope'"):
        reg.get("nope")

    reg.add_timings("run-1", train=1.5, checkpoint=0.25)
    reg.add_timings("run-1", train=1.0)
    assert reg.get("run-1").timings == {"train": 2.5, "checkpoint": 0.25}


def test_sqlite_registry(tmp_path):
    reg = RunRegistry(f"sqlite:///{tmp_path}/sub/dir/runs.db")  # folders are created
    try:
        _exercise(reg)
    finally:
        reg.close()
    # a second start-up finds the schema current and the data intact
    again = RunRegistry(f"sqlite:///{tmp_path}/sub/dir/runs.db")
    assert again.get("run-1").step == 6
    again.close()


@pytest.mark.postgres
def test_postgresql_registry(postgres_url):
    reg = RunRegistry(postgres_url)
    try:
        assert reg.backend == "postgresql"
        with reg.engine.begin() as conn:  # a clean slate on a session-scoped server
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        _exercise(reg)
        RunRegistry(postgres_url).close()  # concurrent-safe re-migration is a no-op
    finally:
        reg.close()


def test_migrations_match_the_models(tmp_path):
    """Alembic's autogenerate finds nothing to add: the shipped migration is the models' schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    reg = RunRegistry(f"sqlite:///{tmp_path}/runs.db")
    with reg.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"version_table": "training_alembic_version"}),
                                Base.metadata)
        assert diff == []
        tables = set(sa.inspect(conn).get_table_names())
    assert {"training_runs", "training_checkpoints", "training_loss", "training_skipped",
            "training_alembic_version"} <= tables
    reg.close()


def test_mark_running_refuses_a_cancelled_run(tmp_path):
    reg = RunRegistry(f"sqlite:///{tmp_path}/runs.db")
    reg.create_run("q", resolved_spec("q").to_dict(), executor="in_process")
    reg.request_cancel("q")
    assert reg.mark_running("q", total_steps=4) is False and reg.get("q").state == "cancelled"
    reg.create_run("r", resolved_spec("r").to_dict(), executor="kubernetes_job")
    assert reg.mark_running("r", total_steps=4) is True
    started = reg.get("r").started_at
    assert reg.mark_running("r", total_steps=4, step=2) is True  # a retried Job pod
    assert reg.get("r").started_at == started and reg.get("r").step == 2
    reg.close()
