"""Detection service costs on 1024x1024 photos, on ONE CPU core, measured side by side in one run.

    python bench/detection.py [--quick]

1. detect: the embedded BlazeFace pipeline (flip-averaged, the default) per image, and with flip
   averaging off, and the bare detector; plus dlib identity embedding per face (with_embeddings).
2. quality: the Assess measures + combined score alone (face box given) and a whole assess.
3. service vs in-process: `Detect` over gRPC with a store URI, served by a real
   `likeness serve detection` process pinned to the measured core, against the same work
   in-process on that core (store read + decode_image + pipeline.detect). The client runs on the
   other core when there is one (in a cluster the caller is another pod).
Everything measured runs pinned to one core with one thread per library. Variants are
interleaved round by round so machine noise hits all of them; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pin(cores: set[int]) -> None:
    os.sched_setaffinity(0, cores)


def photos_1024():
    import cv2
    import numpy as np

    from tests.photos import group_photo, skimage_photo

    def square(a):
        h, w = a.shape[:2]
        s = min(h, w)
        a = a[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        return np.ascontiguousarray(cv2.resize(a, (1024, 1024), interpolation=cv2.INTER_CUBIC))

    return {"astronaut": square(skimage_photo("astronaut")), "group": square(group_photo()),
            "coffee": square(skimage_photo("coffee"))}


def timed(variants: dict, reps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 30 s)")
    args = parser.parse_args()
    reps = 8 if args.quick else 30
    cores = sorted(os.sched_getaffinity(0))
    core, client_core = cores[0], cores[-1]
    pin({core})

    import cv2
    import grpc

    cv2.setNumThreads(1)
    from likeness.api.v1 import common_pb2, detection_pb2, detection_pb2_grpc
    from likeness.core.images import decode_image, encode_jpeg
    from likeness.core.store_local import LocalStore
    from likeness.detection.backends.factory import create_pipeline
    from likeness.detection.quality import QualityWeights, combined_score, measure
    from likeness.detection.settings import DetectionSettings
    from likeness.detection.validation import ValidationPolicy
    from tests.helpers import ServiceProcess, free_port, service_env

    photos = photos_1024()
    policy, weights = ValidationPolicy(), QualityWeights()
    tmp = Path(tempfile.mkdtemp(prefix="bench-detection-"))
    store = LocalStore(tmp / "store")
    uris = {k: store.put(f"bench/{k}.jpg", encode_jpeg(v), "image/jpeg").uri for k, v in photos.items()}
    settings = DetectionSettings(port=free_port(), metrics_enabled=False, store_uri=f"file://{tmp / 'store'}",
                                 log_level="WARNING", detection_threads=1)
    pipeline = create_pipeline(settings)
    pipeline.load()
    pipeline.warmup()
    plain = create_pipeline(settings.model_copy(update={"detection_flip_tta": False}))
    plain.load()
    faces = {k: pipeline.find_faces(v) for k, v in photos.items()}
    counts = {k: len(v) for k, v in faces.items()}

    rows: dict[str, float] = {}
    # 1. detect, per image (mean over the three photos of the median per photo)
    per_photo = []
    for img in photos.values():
        per_photo.append(timed({
            "detect": lambda img=img: pipeline.find_faces(img),
            "detect_no_flip": lambda img=img: plain.find_faces(img),
            "detector_only": lambda img=img: pipeline.detector.detect(img),
        }, reps))
    for key in per_photo[0]:
        rows[f"{key}_ms"] = 1000 * statistics.fmean(p[key] for p in per_photo)
    astro, astro_faces = photos["astronaut"], faces["astronaut"]
    emb = timed({"embed": lambda: pipeline.encoder.embed(astro, astro_faces[:1])}, max(3, reps // 4))
    rows["embed_per_face_ms"] = 1000 * emb["embed"]

    # 2. quality
    best = astro_faces[0]
    q = timed({
        "quality": lambda: combined_score(measure(astro, best.box, best.score), weights),
        "assess": lambda: pipeline.assess(astro, policy, weights),
    }, reps)
    rows["quality_ms"], rows["assess_ms"] = 1000 * q["quality"], 1000 * q["assess"]

    # 3. service (URI) vs in-process (store read + decode + detect). The server process inherits
    # this process's one-core affinity at spawn; the client then moves to the other core.
    env = service_env(LIKENESS_STORE_URI=settings.store_uri, LIKENESS_LOG_LEVEL="WARNING",
                      LIKENESS_DETECTION_THREADS="1", OMP_NUM_THREADS="1")
    server = ServiceProcess("detection", env, log_path=tmp / "server.log").wait_serving(120)

    def in_process(name):
        return pipeline.detect(decode_image(store.get(uris[name]), "images[0].uri"), policy)

    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = detection_pb2_grpc.DetectionServiceStub(channel)
            requests = {k: detection_pb2.DetectRequest(images=[common_pb2.ImageInput(uri=u)])
                        for k, u in uris.items()}

            def service(name):
                pin({client_core})
                try:
                    stub.Detect(requests[name], timeout=60)
                finally:
                    pin({core})

            svc = []
            for name in photos:
                service(name)  # connection and caches warm
                svc.append(timed({"service": lambda name=name: service(name),
                                  "in_process": lambda name=name: in_process(name)}, reps))
    finally:
        server.stop()
    rows["service_uri_ms"] = 1000 * statistics.fmean(s["service"] for s in svc)
    rows["in_process_ms"] = 1000 * statistics.fmean(s["in_process"] for s in svc)
    rows["service_over_in_process"] = rows["service_uri_ms"] / rows["in_process_ms"]
    rows["flip_over_no_flip"] = rows["detect_ms"] / rows["detect_no_flip_ms"]

    targets = {"detect_ms": 20.0, "quality_ms": 5.0, "service_over_in_process": 1.15}
    print(f"detection bench: measured on core {core} (gRPC client on core {client_core}), 1024x1024 photos, "
          f"faces found {counts}, {reps} interleaved rounds\n")
    print(f"{'what':<58}{'measured':>12}{'target':>10}")
    labels = [
        ("detect_ms", "detect per image, BlazeFace + flip averaging (default), ms"),
        ("detect_no_flip_ms", "detect per image, flip averaging off, ms"),
        ("detector_only_ms", "bare BlazeFace inference + decoding per image, ms"),
        ("flip_over_no_flip", "ratio: flip averaging on / off"),
        ("embed_per_face_ms", "dlib 128-d identity embedding per face, ms"),
        ("quality_ms", "quality measures + combined score per image, ms"),
        ("assess_ms", "whole assess (detect + quality) per image, ms"),
        ("service_uri_ms", "Detect over gRPC, URI input, per image, ms"),
        ("in_process_ms", "same in-process: store read + decode + detect, ms"),
        ("service_over_in_process", "ratio: service (URI) / in-process"),
    ]
    for key, label in labels:
        target = f"<= {targets[key]:g}" if key in targets else ""
        print(f"{label:<58}{rows[key]:>12.3f}{target:>10}")
    print(json.dumps({"bench": "detection", "quick": args.quick, "reps": reps, "faces": counts,
                      **{k: round(v, 4) for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
