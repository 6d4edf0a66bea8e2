"""Orchestrator process: the job API plus (by default) the job loop of this replica."""

from __future__ import annotations

import asyncio

from likeness.api.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from likeness.core.auth import BearerTokenInterceptor
from likeness.core.server import Service, run
from likeness.core.store import open_store
from likeness.orchestrator.clients import ServiceClients
from likeness.orchestrator.jobstore import JobStore
from likeness.orchestrator.runner import Runner
from likeness.orchestrator.servicer import OrchestratorServicer
from likeness.orchestrator.settings import OrchestratorSettings

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name


def create_service(settings: OrchestratorSettings | None = None) -> Service:
    settings = settings or OrchestratorSettings()
    jobs = JobStore(settings.orchestrator_database_url)
    store = open_store(settings)
    clients = ServiceClients(settings)
    runner = Runner(settings, jobs, store, clients)
    loop_task: list[asyncio.Task] = []

    async def warmup() -> None:
        if settings.orchestrator_run_jobs:
            loop_task.append(asyncio.create_task(runner.run_forever()))

    async def shutdown() -> None:
        await runner.stop()
        for t in loop_task:
            t.cancel()
        await clients.close()
        jobs.close()

    servicer = OrchestratorServicer(jobs, store, clients)
    db = settings.orchestrator_database_url.split("://", 1)[0]
    return Service("orchestrator", [(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, servicer)],
                   [SERVICE_NAME], warmup=warmup, shutdown=shutdown,
                   description={"job_store": db, "store": settings.store_uri, "replica": runner.owner,
                                "auth": bool(settings.orchestrator_auth_token.get_secret_value())})


def interceptors(settings: OrchestratorSettings) -> list:
    token = settings.orchestrator_auth_token.get_secret_value()
    return [BearerTokenInterceptor(token)] if token else []


def main() -> None:
    settings = OrchestratorSettings()
    run(lambda: create_service(settings), settings, interceptors=interceptors(settings))
