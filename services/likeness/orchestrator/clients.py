"""One gRPC client per service: round-robin channels (core.channels), a concurrency bound per
service, a deadline per call, and retries with backoff on UNAVAILABLE and RESOURCE_EXHAUSTED for
as long as `retry_seconds` (a service restarting or a replica being replaced is waited out; work
is content-addressed, so a retried call never duplicates an artifact)."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import grpc
from google.protobuf.message_factory import GetMessageClass

from likeness.api.v1 import (
    detection_pb2,
    detection_pb2_grpc,
    embedding_pb2,
    embedding_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    restoration_pb2,
    restoration_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from likeness.core import errors, faults
from likeness.core.channels import aio_channel
from likeness.core.interceptor import PUSHBACK
from likeness.orchestrator.settings import OrchestratorSettings

log = logging.getLogger("likeness.orchestrator.clients")

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
STUBS = {
    "detection": detection_pb2_grpc.DetectionServiceStub,
    "generation": generation_pb2_grpc.GenerationServiceStub,
    "embedding": embedding_pb2_grpc.EmbeddingServiceStub,
    "restoration": restoration_pb2_grpc.RestorationServiceStub,
    "training": training_pb2_grpc.TrainingServiceStub,
}
SERVICES = {name: module.DESCRIPTOR.services_by_name[f"{name.title()}Service"] for name, module in (
    ("detection", detection_pb2), ("generation", generation_pb2), ("embedding", embedding_pb2),
    ("restoration", restoration_pb2), ("training", training_pb2))}


def response_type(service: str, method: str) -> type:
    """The protobuf class `method` of `service` ("detection", ...) answers with."""
    return GetMessageClass(SERVICES[service].methods_by_name[method].output_type)


# gRPC status -> domain error, so workflows see the services' own messages.
ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
}


class ServiceClient:
    def __init__(self, name: str, address: str, settings: OrchestratorSettings):
        self.name = name
        self.address = address
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._stub = None
        self.concurrency = settings.orchestrator_service_concurrency
        self._limit: asyncio.Semaphore | None = None
        self.retry_seconds = settings.orchestrator_retry_seconds
        self.timeout = settings.orchestrator_call_timeout_seconds

    @property
    def stub(self):
        """Created on first use, inside the event loop that serves (aio channels bind to one loop).
        Channel-level retries are off: `call` retries for longer, with its own deadline budget."""
        if self._stub is None:
            self._channel = aio_channel(self.address, self.settings, max_attempts=1)
            self._stub = STUBS[self.name](self._channel)
        return self._stub

    @property
    def limit(self) -> asyncio.Semaphore:
        if self._limit is None:
            self._limit = asyncio.Semaphore(self.concurrency)
        return self._limit

    def response_type(self, method: str) -> type:
        return response_type(self.name, method)

    async def call(self, method: str, request, *, timeout: float | None = None):
        """Unary call with retries; raises a core.errors.LikenessError naming the service and method.
        A call that needed retries is reported (core.faults) with their count and last status."""
        start = time.monotonic()
        deadline = start + self.retry_seconds
        delay = 0.2
        attempt = 0
        last = ""
        while True:
            attempt += 1
            try:
                async with self.limit:
                    pending = getattr(self.stub, method)(request, timeout=timeout or self.timeout)
                    response = await pending
                faults.report_trailer(await pending.trailing_metadata(), f"{self.name}.{method}")
                if attempt > 1:
                    self._report_retries(method, attempt - 1, last, start, "then succeeded")
                return response
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in RETRYABLE and time.monotonic() + delay < deadline:
                    last = code.name
                    wait = max(delay, pushback_seconds(exc.trailing_metadata()))
                    log.warning("retrying", extra={"service": self.name, "method": method, "code": code.name,
                                                   "attempt": attempt, "wait_s": round(wait, 2)})
                    await asyncio.sleep(wait * (0.8 + 0.4 * random.random()))
                    delay = min(delay * 2, 5.0)
                    continue
                if attempt > 1:
                    self._report_retries(method, attempt - 1, last, start, f"then failed with {code.name}")
                cls = ERRORS.get(code, errors.LikenessError)
                raise cls("", f"{self.name}.{method} failed with {code.name}: {exc.details()}") from exc

    def _report_retries(self, method: str, retries: int, last: str, start: float, outcome: str) -> None:
        faults.report("service_retry", f"{self.name}.{method}: retried {retries} time{'s' * (retries != 1)} over "
                                       f"{time.monotonic() - start:.1f}s (last status {last}), {outcome}")

    def stream(self, method: str, request, *, timeout: float | None = None):
        return getattr(self.stub, method)(request, timeout=timeout or self.timeout)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None


def pushback_seconds(trailers) -> float:
    """The server's back-off hint (`grpc-retry-pushback-ms`), in seconds; 0 when absent or malformed.
    A negative value means "do not retry" to gRPC's own retries; here the call's budget decides."""
    value = dict(trailers or ()).get(PUSHBACK, "")
    return int(value) / 1000 if value.isdigit() else 0.0


class ServiceClients:
    def __init__(self, settings: OrchestratorSettings):
        self.detection = ServiceClient("detection", settings.orchestrator_detection_address, settings)
        self.generation = ServiceClient("generation", settings.orchestrator_generation_address, settings)
        self.embedding = ServiceClient("embedding", settings.orchestrator_embedding_address, settings)
        self.restoration = ServiceClient("restoration", settings.orchestrator_restoration_address, settings)
        self.training = ServiceClient("training", settings.orchestrator_training_address, settings)

    async def close(self) -> None:
        for client in (self.detection, self.generation, self.embedding, self.restoration, self.training):
            await client.close()
