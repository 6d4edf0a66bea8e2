"""Training service process: registry (migrated on start-up), store, model repository, executors."""

from __future__ import annotations

import asyncio
import logging

from likeness.api.v1 import training_pb2, training_pb2_grpc
from likeness.core.images import ImageLimits
from likeness.core.modelrepo import ModelRepository
from likeness.core.server import Service, run
from likeness.core.store import open_store
from likeness.training.evaluation import Evaluator
from likeness.training.models import BaseModels
from likeness.training.registry import RunRegistry
from likeness.training.runner import RunContext
from likeness.training.runs import TrainingRuns
from likeness.training.servicer import TrainingServicer
from likeness.training.settings import TrainingSettings

SERVICE_NAME = training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name
RECONCILE_SECONDS = 15.0
log = logging.getLogger("likeness.training.app")


def apply_torch_threads(settings: TrainingSettings) -> None:
    if settings.training_torch_threads:
        import torch

        torch.set_num_threads(settings.training_torch_threads)


def create_context(settings: TrainingSettings) -> RunContext:
    store = open_store(settings)
    return RunContext(registry=RunRegistry(settings.training_database_url), store=store,
                      models=BaseModels(ModelRepository.from_settings(settings, store)),
                      evaluator=Evaluator.from_settings(settings), limits=ImageLimits.from_settings(settings),
                      gradient_checkpointing=settings.training_gradient_checkpointing)


async def _reconcile_forever(executors: dict, settings: TrainingSettings) -> None:
    """Every RECONCILE_SECONDS: adopt in-process runs of dead replicas; fail runs whose
    Kubernetes Job failed before its pod could say why."""
    while True:
        await asyncio.sleep(RECONCILE_SECONDS)
        try:
            await asyncio.to_thread(executors["in_process"].adopt_orphans)
            if settings.training_executor == "kubernetes_job":
                await asyncio.to_thread(executors["kubernetes_job"].reconcile)
        except Exception as exc:  # noqa: BLE001 - no cluster or registry access must not stop the service
            log.warning("reconcile failed", extra={"error": str(exc)[:300]})


def create_service(settings: TrainingSettings | None = None, *, kubernetes_api=None) -> Service:
    settings = settings or TrainingSettings()
    apply_torch_threads(settings)
    ctx = create_context(settings)
    from likeness.training.executors.in_process import InProcessExecutor
    from likeness.training.executors.kubernetes_job import KubernetesJobExecutor

    executors = {"in_process": InProcessExecutor(ctx, settings.training_max_concurrent_runs),
                 "kubernetes_job": KubernetesJobExecutor(ctx.registry, settings, kubernetes_api)}
    runs = TrainingRuns(ctx, executors, settings.training_executor,
                        watch_interval=settings.training_watch_interval_seconds)
    reconciler: list[asyncio.Task] = []

    async def warmup() -> None:
        # an embedded (SQLite) registry has one service process: whatever it left unfinished,
        # this process resumes now; replicas on PostgreSQL adopt only runs with a stale heartbeat
        adopted = await asyncio.to_thread(executors["in_process"].adopt_orphans,
                                          sole_process=ctx.registry.backend == "sqlite")
        if adopted:
            log.info("resuming interrupted runs", extra={"run_ids": adopted})
        reconciler.append(asyncio.create_task(_reconcile_forever(executors, settings)))

    async def shutdown() -> None:
        for task in reconciler:
            task.cancel()
        await asyncio.to_thread(executors["in_process"].shutdown)
        ctx.registry.close()

    return Service(
        name="training",
        servicers=[(training_pb2_grpc.add_TrainingServiceServicer_to_server, TrainingServicer(runs))],
        service_names=[SERVICE_NAME],
        warmup=warmup,
        shutdown=shutdown,
        description={"registry": ctx.registry.backend, "executor": settings.training_executor,
                     "torch_threads": settings.training_torch_threads or "default",
                     "max_concurrent_runs": settings.training_max_concurrent_runs,
                     **{f"evaluation_{k}": v for k, v in ctx.evaluator.describe().items()}},
    )


def main() -> None:
    run(create_service, TrainingSettings())


if __name__ == "__main__":
    main()
