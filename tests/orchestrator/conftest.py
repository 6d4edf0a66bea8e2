import pytest

from likeness.core.settings import CommonSettings
from likeness.core.store import open_store
from likeness.orchestrator import runner as runner_mod
from likeness.orchestrator.jobstore import JobStore
from likeness.orchestrator.settings import OrchestratorSettings
from tests.orchestrator import replicas


@pytest.fixture
def replica_env(tmp_path, monkeypatch):
    """(settings, job store, store) with short leases, curate jobs running replicas.counting_workflow."""
    monkeypatch.setitem(runner_mod.WORKFLOWS, "curate", replicas.counting_workflow)
    replicas.CALLS.clear()
    settings = OrchestratorSettings(orchestrator_database_url=f"sqlite:///{tmp_path}/jobs.db",
                                    store_uri=f"file://{tmp_path}/store", orchestrator_lease_seconds=0.6,
                                    orchestrator_heartbeat_seconds=0.1, orchestrator_poll_seconds=0.05)
    jobs = JobStore(settings.orchestrator_database_url)
    yield settings, jobs, open_store(CommonSettings(store_uri=settings.store_uri))
    jobs.close()
