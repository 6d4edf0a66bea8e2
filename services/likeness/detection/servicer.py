"""gRPC face of the detection service: protobuf <-> domain translation, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from likeness.api.v1 import detection_pb2, detection_pb2_grpc
from likeness.core.batch import check_batch, raise_single
from likeness.core.convert import item_error_pb
from likeness.core.errors import FailedPrecondition, check_range
from likeness.core.image_loader import ImageLoader, LoadedImage
from likeness.core.worker import ModelWorker
from likeness.detection.convert import (
    POLICY_FIELDS,
    WEIGHT_FIELDS,
    fill_result,
    optional_fields,
    outcome_label,
    quality_pb,
)
from likeness.detection.pipeline import FacePipeline
from likeness.detection.quality import QualityWeights
from likeness.detection.validation import ValidationPolicy


class DetectionServicer(detection_pb2_grpc.DetectionServiceServicer):
    def __init__(self, pipeline: FacePipeline, images: ImageLoader, *, max_batch: int, policy: ValidationPolicy,
                 weights: QualityWeights):
        self._pipeline, self._images = pipeline, images
        self._max_batch, self._policy, self._weights = max_batch, policy, weights
        # inference is serialised on one model worker; decoding runs on the image loader's own pool
        self._worker = ModelWorker("detection")

    def close(self) -> None:
        self._worker.close()

    def _check_common(self, request) -> ValidationPolicy:
        check_batch(len(request.images), self._max_batch, "images", "images", "LIKENESS_DETECTION_MAX_BATCH")
        if request.with_embeddings and self._pipeline.encoder is None:
            raise FailedPrecondition("with_embeddings", "this server runs no identity model "
                                                        "(LIKENESS_DETECTION_IDENTITY=none)")
        return self._policy.overridden(**optional_fields(request.policy, POLICY_FIELDS)).checked("policy")

    async def _each_image(self, loaded: list[LoadedImage], results, stage: str, *args) -> AsyncIterator:
        """Runs the pipeline's `stage` (cached) for every loaded image, the request's images as one
        unit on the model worker (core.batch.run_each); yields (result message, output) for the good
        ones, fills an ItemError into the result of a failed one."""
        good = [item for item in loaded if item.ok]
        outs = dict(zip((item.index for item in good), await self._worker.run(
            self._pipeline.cached_each, stage, [item.pixels for item in good], *args), strict=True))
        for item in loaded:
            result = results.add(index=item.index)
            outcome = outs.get(item.index)
            error = item.error if outcome is None else outcome.error
            if error is not None:
                result.error.CopyFrom(item_error_pb(item.index, error))
                self._worker.count(stage, "failed")
                continue
            out = outcome.value
            fill_result(result, out)
            self._worker.count(stage, outcome_label(out.verdict))
            yield result, out

    async def Detect(self, request: detection_pb2.DetectRequest,
                     context: grpc.aio.ServicerContext) -> detection_pb2.DetectResponse:
        policy = self._check_common(request)
        loaded = await self._images.load_all(request.images, "images")
        raise_single([item.error for item in loaded])
        response = detection_pb2.DetectResponse(backend=self._pipeline.detector.name)
        async for _ in self._each_image(loaded, response.results, "detect", policy, request.with_embeddings):
            pass
        return response

    async def Assess(self, request: detection_pb2.AssessRequest,
                     context: grpc.aio.ServicerContext) -> detection_pb2.AssessResponse:
        policy = self._check_common(request)
        weights = self._weights.overridden(**optional_fields(request.weights, WEIGHT_FIELDS)).checked("weights")
        min_quality = request.min_quality if request.HasField("min_quality") else None
        if min_quality is not None:
            check_range(min_quality, "min_quality", 0.0, 1.0)
        loaded = await self._images.load_all(request.images, "images")
        raise_single([item.error for item in loaded])
        response = detection_pb2.AssessResponse(backend=self._pipeline.detector.name)
        async for result, a in self._each_image(loaded, response.results, "assess", policy, weights,
                                                request.with_embeddings, min_quality):
            result.quality.CopyFrom(quality_pb(a.quality, a.score))
        return response
