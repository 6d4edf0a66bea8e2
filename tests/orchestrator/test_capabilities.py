"""Submit refuses, with FAILED_PRECONDITION naming the setting to change, a spec the running
services cannot do: a CLIP check without a text tower, a reference image without IP-Adapter, an
unknown model. A service that does not answer is not held against the spec."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest

from likeness.api.v1 import common_pb2, generation_pb2, training_pb2
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.core.errors import FailedPrecondition
from likeness.orchestrator import capabilities


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def clients(*, text_tower=True, engine="torch", kinds=("sdxl",), generation_up=True):
    async def embed_texts(request, timeout=None):
        if not text_tower:
            raise rpc_error(grpc.StatusCode.FAILED_PRECONDITION,
                            "encoder: the image encoder 'classical-v1' has no text tower")

    async def list_models(request, timeout=None):
        if not generation_up:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")
        names = {"sdxl": "tiny-sdxl", "ip-adapter": "ip-adapter-sdxl"}
        return generation_pb2.ListModelsResponse(engine=engine, models=[
            generation_pb2.ModelInfo(name=names[k], kind=k) for k in kinds])

    return SimpleNamespace(embedding=SimpleNamespace(stub=SimpleNamespace(EmbedTexts=embed_texts)),
                           generation=SimpleNamespace(stub=SimpleNamespace(ListModels=list_models)))


def storyboard(**kw) -> o.JobSpec:
    return o.JobSpec(storyboard=o.StoryboardSpec(**{"model": "tiny-sdxl", "frame_prompts": ["a"], **kw}))


REFERENCE = common_pb2.ImageInput(uri="file:///x.png")


@pytest.mark.parametrize("spec, services, field, words", [
    (storyboard(), clients(text_tower=False), "spec.storyboard.skip_clip_check",
     "LIKENESS_EMBEDDING_ENCODER=open_clip"),
    (storyboard(skip_clip_check=True, reference_image=REFERENCE), clients(engine="onnxruntime"),
     "spec.storyboard.reference_image", "LIKENESS_GENERATION_ENGINE=torch"),
    (storyboard(skip_clip_check=True, reference_image=REFERENCE), clients(), "spec.storyboard.reference_image",
     "IP-Adapter weights"),
    (storyboard(model="sdxl-base"), clients(), "spec.storyboard.model", "unknown model 'sdxl-base'"),
    (o.JobSpec(train=o.TrainSpec(run=training_pb2.RunSpec(base_model="sd15"))), clients(), "spec.train.run.base_model",
     "unknown model 'sd15'"),
])
def test_refused_with_the_setting_to_change(spec, services, field, words):
    with pytest.raises(FailedPrecondition) as err:
        asyncio.run(capabilities.check(spec, services))
    assert err.value.field == field and words in err.value.detail


@pytest.mark.parametrize("spec, services", [
    (storyboard(), clients()),
    (storyboard(skip_clip_check=True), clients(text_tower=False)),
    (storyboard(skip_clip_check=True, reference_image=REFERENCE), clients(kinds=("sdxl", "ip-adapter"))),
    (storyboard(model="sdxl-base"), clients(generation_up=False)),  # unreachable now: the job waits it out
])
def test_accepted_when_the_services_can(spec, services):
    asyncio.run(capabilities.check(spec, services))
