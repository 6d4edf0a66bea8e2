"""Checks at Submit that the running services can do what a spec asks, so a job that cannot succeed
is refused with FAILED_PRECONDITION naming the setting to change, instead of failing mid-run:
the model exists in the repository, the embedding encoder has a text tower when the storyboard's
CLIP check is on, and the generation engine has IP-Adapter weights when a reference image is set.
A service that does not answer now is not held against the spec: the job waits it out when it runs."""

from __future__ import annotations

import grpc

from likeness.api.v1 import embedding_pb2, generation_pb2, orchestrator_pb2
from likeness.core.errors import FailedPrecondition
from likeness.orchestrator import specs

TIMEOUT = 10.0


async def _models(clients) -> generation_pb2.ListModelsResponse | None:
    try:
        return await clients.generation.stub.ListModels(generation_pb2.ListModelsRequest(), timeout=TIMEOUT)
    except grpc.aio.AioRpcError:
        return None


async def require_text_tower(clients) -> None:
    """The storyboard's CLIP check needs EmbeddingService.Score; a classical encoder has no text tower."""
    try:
        await clients.embedding.stub.EmbedTexts(embedding_pb2.EmbedTextsRequest(texts=["a portrait"]), timeout=TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            raise FailedPrecondition(
                "spec.storyboard.skip_clip_check",
                f"the CLIP check needs an embedding encoder with a text tower, and this stack's has none "
                f"({exc.details()}). Either set skip_clip_check (CLI: --skip-clip-check; the report then says the "
                "check was skipped), or run the embedding service with LIKENESS_EMBEDDING_ENCODER=open_clip") from None


def require_reference_engine(listed: generation_pb2.ListModelsResponse, model: str) -> None:
    if listed.engine != "torch":
        raise FailedPrecondition("spec.storyboard.reference_image",
                                 f"IP-Adapter guidance needs the torch generation engine; this stack runs "
                                 f"'{listed.engine}' (set LIKENESS_GENERATION_ENGINE=torch, or drop reference_image)")
    adapters = sorted(m.name for m in listed.models if m.kind == "ip-adapter")
    if not adapters:
        raise FailedPrecondition("spec.storyboard.reference_image",
                                 f"IP-Adapter guidance needs IP-Adapter weights (a model of kind ip-adapter, for "
                                 f"'{model}' named in its model.yaml `config.ip_adapter` or `ip-adapter-<family>`) in "
                                 "the model repository (LIKENESS_MODEL_REPOSITORY), and there are none; add them or "
                                 "drop reference_image")


async def check(spec: orchestrator_pb2.JobSpec, clients) -> None:
    kind = spec.WhichOneof("kind")
    field, model = specs.model_of(spec)
    listed = await _models(clients) if model else None
    if listed is not None:
        names = sorted(m.name for m in listed.models)
        if model not in names:
            raise FailedPrecondition(field, f"unknown model '{model}'; the model repository has: "
                                            f"{', '.join(names) or 'none'} (set {field} to one of them)")
    if kind == "storyboard":
        if not spec.storyboard.skip_clip_check:
            await require_text_tower(clients)
        if spec.storyboard.HasField("reference_image") and listed is not None:
            require_reference_engine(listed, model)
