"""gRPC face of the detection service: protobuf <-> domain translation, nothing else."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from likeness.api.v1 import common_pb2, detection_pb2, detection_pb2_grpc
from likeness.core import metrics, tracing
from likeness.core.batch_work import run_each
from likeness.core.convert import item_error_pb
from likeness.core.errors import FailedPrecondition, InvalidArgument, LikenessError, check_range
from likeness.core.memo import LruCache, content_key
from likeness.detection.faces import Face
from likeness.detection.pipeline import FacePipeline
from likeness.detection.quality import QualityMeasures, QualityWeights
from likeness.detection.validation import ValidationPolicy, Verdict

POLICY_FIELDS = ("min_face_fraction", "max_yaw", "max_pitch", "min_confidence", "min_sharpness", "min_eye_openness")
WEIGHT_FIELDS = ("sharpness", "contrast", "exposure", "face_confidence")


def _optional(message, names) -> dict:
    return {n: getattr(message, n) for n in names if message.HasField(n)}


def face_pb(face: Face) -> common_pb2.Face:
    b = face.box
    pb = common_pb2.Face(box=common_pb2.Box(x_min=b.x_min, y_min=b.y_min, x_max=b.x_max, y_max=b.y_max),
                         score=face.score, embedding_model=face.embedding_model)
    for kind, (x, y) in face.landmarks.items():
        pb.landmarks.add(kind=common_pb2.LandmarkKind.Value(f"LANDMARK_KIND_{kind.value}"),
                         point=common_pb2.Point(x=x, y=y))
    for side, eye in (("LEFT", face.left_eye), ("RIGHT", face.right_eye)):
        if eye is None:
            continue
        kind = common_pb2.LandmarkKind.Value
        pb.landmarks.add(kind=kind(f"LANDMARK_KIND_{side}_IRIS"), point=common_pb2.Point(x=eye.iris[0], y=eye.iris[1]))
        for name, contour in (("UPPER_LID", eye.upper_lid), ("LOWER_LID", eye.lower_lid)):
            for x, y in contour:
                pb.landmarks.add(kind=kind(f"LANDMARK_KIND_{side}_{name}"), point=common_pb2.Point(x=x, y=y))
        setattr(pb, f"{side.lower()}_eye_openness", eye.openness)
    if face.pose is not None:
        pb.pose.CopyFrom(common_pb2.Pose(yaw=face.pose.yaw, pitch=face.pose.pitch, roll=face.pose.roll))
    if face.embedding is not None:
        pb.embedding.values.extend(face.embedding.tolist())
    return pb


def verdict_pb(v: Verdict) -> detection_pb2.Verdict:
    return detection_pb2.Verdict(accepted=v.accepted, detail=v.detail,
                                 reason=detection_pb2.RejectionReason.Value(f"REJECTION_REASON_{v.reason.value}"))


def quality_pb(m: QualityMeasures, score: float) -> detection_pb2.Quality:
    return detection_pb2.Quality(
        sharpness_face=m.sharpness_face, sharpness_image=m.sharpness_image, contrast=m.contrast,
        brightness=m.brightness, shadows_clipped=m.shadows_clipped, highlights_clipped=m.highlights_clipped,
        face_confidence=m.face_confidence, score=score)


def _outcome(v: Verdict) -> str:
    return "accepted" if v.accepted else f"rejected_{v.reason.value.lower()}"


class DetectionServicer(detection_pb2_grpc.DetectionServiceServicer):
    def __init__(self, pipeline: FacePipeline, images, *, max_batch: int, policy: ValidationPolicy,
                 weights: QualityWeights, cache_entries: int = 2048):
        self._pipeline, self._images = pipeline, images
        self._max_batch, self._policy, self._weights = max_batch, policy, weights
        # one model worker: inference is serialised (the models are not thread-safe and a pod is
        # sized for one core); decoding runs concurrently on the image loader's own pool
        self._models = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detection-model")
        self._cache = LruCache(cache_entries)

    def close(self) -> None:
        self._models.shutdown(wait=False, cancel_futures=True)

    def _check_common(self, request) -> ValidationPolicy:
        n = len(request.images)
        if not 1 <= n <= self._max_batch:
            raise InvalidArgument("images", f"batch of {n} images; send 1 to {self._max_batch} "
                                            "(LIKENESS_DETECTION_MAX_BATCH)")
        if request.with_embeddings and self._pipeline.encoder is None:
            raise FailedPrecondition("with_embeddings", "this server runs no identity model "
                                                        "(LIKENESS_DETECTION_IDENTITY=none)")
        return self._policy.overridden(**_optional(request.policy, POLICY_FIELDS)).checked("policy")

    @staticmethod
    def _raise_single(loaded) -> None:
        # house convention (tests/core/test_bad_images_service.py): a batch of one that fails gets
        # the error as the call's status; larger batches get per-item errors
        if len(loaded) == 1 and loaded[0].error is not None:
            raise loaded[0].error

    async def _run(self, fn, *args):
        return await tracing.run_on_worker(self._models, fn, *args)

    def _cached(self, stage: str, fn, pixels, *args):
        """`fn(pixels, *args)` on the model worker, answered from the result cache when the same
        pixels and parameters were seen; the worker fills the cache even if the caller has gone."""
        key = content_key(stage, pixels, args)
        hit = self._cache.get(key)
        if hit is not None:
            metrics.ITEMS.labels("detection", f"{stage}_model", "cached").inc()
            return hit
        out = fn(pixels, *args)
        self._cache.put(key, out)
        metrics.ITEMS.labels("detection", f"{stage}_model", "computed").inc()
        return out

    async def _each_image(self, loaded, results, stage: str, fn, *args):
        """Runs `fn(pixels, *args)` (cached) for every loaded image, the request's images as one
        unit on the model worker (core.batch_work); yields (result message, output) for the good
        ones, fills an ItemError into the result of a failed one."""
        good = [item for item in loaded if item.ok]
        outs = dict(zip((item.index for item in good), await self._run(
            run_each, lambda pixels: self._cached(stage, fn, pixels, *args), [item.pixels for item in good]),
            strict=True))
        for item in loaded:
            result = results.add(index=item.index)
            out = outs.get(item.index, item.error)
            if isinstance(out, LikenessError):
                result.error.CopyFrom(item_error_pb(item.index, out))
                metrics.ITEMS.labels("detection", stage, "failed").inc()
                continue
            result.width, result.height = out.width, out.height
            result.faces.extend(face_pb(f) for f in out.faces)
            result.verdict.CopyFrom(verdict_pb(out.verdict))
            metrics.ITEMS.labels("detection", stage, _outcome(out.verdict)).inc()
            yield result, out

    async def Detect(self, request, context):
        policy = self._check_common(request)
        loaded = await self._images.load_all(request.images, "images")
        self._raise_single(loaded)
        response = detection_pb2.DetectResponse(backend=self._pipeline.detector.name)
        async for _ in self._each_image(loaded, response.results, "detect", self._pipeline.detect, policy,
                                        request.with_embeddings):
            pass
        return response

    async def Assess(self, request, context):
        policy = self._check_common(request)
        weights = self._weights.overridden(**_optional(request.weights, WEIGHT_FIELDS)).checked("weights")
        min_quality = request.min_quality if request.HasField("min_quality") else None
        if min_quality is not None:
            check_range(min_quality, "min_quality", 0.0, 1.0)
        loaded = await self._images.load_all(request.images, "images")
        self._raise_single(loaded)
        response = detection_pb2.AssessResponse(backend=self._pipeline.detector.name)
        async for result, a in self._each_image(loaded, response.results, "assess", self._pipeline.assess, policy,
                                                weights, request.with_embeddings, min_quality):
            result.quality.CopyFrom(quality_pb(a.quality, a.score))
        return response
