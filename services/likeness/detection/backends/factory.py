"""Builds the detection pipeline that the settings ask for; names no fallback."""

from __future__ import annotations

from pathlib import Path

from likeness.detection.pipeline import FacePipeline
from likeness.detection.quality import QualityScales
from likeness.detection.settings import DetectionSettings


def identity_model(settings: DetectionSettings) -> str:
    """`dlib`, `arcface` or `none`, resolving `auto` by backend."""
    if settings.detection_identity != "auto":
        return settings.detection_identity
    return "arcface" if settings.detection_backend == "insightface" else "dlib"


def pack_dir(settings: DetectionSettings) -> Path:
    """The InsightFace pack copied from the model repository to local disk (ModelMissing when the
    repository lacks it or any of its files)."""
    from likeness.core.modelrepo import ModelRepository

    repo = ModelRepository.from_settings(settings)
    return repo.fetch(settings.detection_insightface_pack)


def create_pipeline(settings: DetectionSettings, pack_folder: Path | None = None) -> FacePipeline:
    """`pack_folder` overrides the model repository look-up (tests, local runs)."""
    identity = identity_model(settings)
    needs_pack = settings.detection_backend == "insightface" or identity == "arcface"
    folder = (pack_folder or pack_dir(settings)) if needs_pack else None
    pack = settings.detection_insightface_pack
    threads = settings.detection_threads

    if settings.detection_backend == "insightface":
        from likeness.detection.backends.insightface import ScrfdDetector

        detector = ScrfdDetector(folder, pack, settings.detection_providers, settings.detection_det_size,
                                 settings.detection_min_score, threads, need_recognition=identity == "arcface",
                                 device=settings.detection_device)
    else:
        from likeness.detection.backends.blazeface import BlazeFaceDetector

        detector = BlazeFaceDetector(settings.detection_min_score, threads)

    encoder = None
    if identity == "dlib":
        from likeness.detection.backends.dlib_identity import DlibIdentityEncoder

        encoder = DlibIdentityEncoder()
    elif identity == "arcface":
        from likeness.detection.backends.insightface import ArcFaceEncoder

        encoder = ArcFaceEncoder(folder, pack, settings.detection_providers, threads, device=settings.detection_device)

    mesh = None
    if settings.detection_mesh_faces:
        from likeness.detection.mesh import FaceMesh

        mesh = FaceMesh(threads)
    scales = QualityScales(settings.detection_sharpness_half, settings.detection_contrast_half)
    return FacePipeline(detector, encoder, large_face_fraction=settings.detection_large_face_fraction,
                        pad_fraction=settings.detection_pad_fraction, flip_tta=settings.detection_flip_tta,
                        scales=scales, mesh=mesh, mesh_faces=settings.detection_mesh_faces)
