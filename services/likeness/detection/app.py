"""Detection service process: builds the pipeline from settings, warms it, serves it."""

from __future__ import annotations

import asyncio
import logging

from likeness.api.v1 import detection_pb2, detection_pb2_grpc
from likeness.core.image_loader import ImageLoader
from likeness.core.images import ImageLimits
from likeness.core.server import Service, run
from likeness.core.store import open_store
from likeness.detection.backends.factory import create_pipeline, identity_model
from likeness.detection.quality import QualityWeights
from likeness.detection.servicer import DetectionServicer
from likeness.detection.settings import DetectionSettings
from likeness.detection.validation import ValidationPolicy

log = logging.getLogger("likeness.detection")

SERVICE_NAME = detection_pb2.DESCRIPTOR.services_by_name["DetectionService"].full_name


def default_policy(s: DetectionSettings) -> ValidationPolicy:
    return ValidationPolicy(s.detection_min_face_fraction, s.detection_max_yaw, s.detection_max_pitch,
                            s.detection_min_confidence, s.detection_min_sharpness,
                            s.detection_min_eye_openness, s.detection_max_cut_off).checked("LIKENESS_DETECTION")


def default_weights(s: DetectionSettings) -> QualityWeights:
    return QualityWeights(s.detection_weight_sharpness, s.detection_weight_contrast, s.detection_weight_exposure,
                          s.detection_weight_face_confidence).checked("LIKENESS_DETECTION_WEIGHT")


def create_service(settings: DetectionSettings | None = None, pipeline=None) -> Service:
    """`pipeline` overrides the one built from settings (tests). Models load in warm-up, so a
    missing model fails start-up (ModelMissing names the files) before the service is SERVING."""
    settings = settings or DetectionSettings()
    pipeline = pipeline or create_pipeline(settings)
    images = ImageLoader(open_store(settings), ImageLimits.from_settings(settings))
    servicer = DetectionServicer(pipeline, images, max_batch=settings.detection_max_batch,
                                 policy=default_policy(settings), weights=default_weights(settings),
                                 cache_entries=settings.detection_result_cache)

    async def warmup() -> None:
        await asyncio.to_thread(pipeline.load)
        await asyncio.to_thread(pipeline.warmup)
        log.info("detection models warm", extra=pipeline.describe())

    async def shutdown() -> None:
        servicer.close()
        images.close()

    return Service(
        name="detection",
        servicers=[(detection_pb2_grpc.add_DetectionServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        warmup=warmup,
        shutdown=shutdown,
        description={"backend": settings.detection_backend, "identity": identity_model(settings),
                     "max_batch": settings.detection_max_batch, "device": settings.detection_device,
                     "providers": settings.detection_providers},
    )


def main() -> None:
    run(create_service, DetectionSettings())


if __name__ == "__main__":
    main()
