"""Face judgement against a labelled set (bench/face_set.py): accuracy per kind, a confusion table
of outcomes, time per image; the tuning and held-out parts side by side.

    python bench/faces.py [--split tune|held_out] [--calibrate] [--show-wrong]

Runs `Assess` in-process with the detection service's DEFAULT settings (DetectionSettings():
BlazeFace + flip averaging + face mesh, the default ValidationPolicy including the blur gate;
no min_quality, no eye gate). "Right" means the outcome is one the item's construction allows;
ambiguous items (a blur or size between the labels' bands) are reported but not scored.

--calibrate prints, on the TUNING part only, the face sharpness of the sharp and the blurred
items and the threshold that separates them best (what LIKENESS_DETECTION_MIN_SHARPNESS's default
was chosen from).

Outcomes are deterministic, so the set runs once: there is nothing for repetitions to average. The
time per image is the mean CPU time over the set's images, printed with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def outcome(assessment) -> str:
    v = assessment.verdict
    return "kept" if v.accepted else v.reason.value.lower()


def run(items, pipeline, policy, weights) -> list[dict]:
    rows = []
    for item in items:
        image = item.render()
        t0 = time.thread_time()
        a = pipeline.assess(image, policy, weights)
        cpu = time.thread_time() - t0
        out = outcome(a)
        rows.append({"name": item.name, "kind": item.kind, "split": item.split, "label": item.label,
                     "expected": item.expected, "outcome": out,
                     "right": None if item.ambiguous else out in item.expected,
                     "sharpness": a.quality.sharpness_face, "detail": a.verdict.detail, "cpu_s": cpu,
                     "pixels": image.shape[0] * image.shape[1]})
    return rows


def accuracy(rows) -> tuple[int, int]:
    scored = [r for r in rows if r["right"] is not None]
    return sum(r["right"] for r in scored), len(scored)


def print_tables(rows, splits) -> None:
    kinds = sorted({r["kind"] for r in rows})
    header = f"{'kind':<20}" + "".join(f"{s:>14}" for s in splits)
    print(header)
    for kind in kinds + ["ALL"]:
        cells = []
        for s in splits:
            part = [r for r in rows if r["split"] == s and (kind == "ALL" or r["kind"] == kind)]
            right, n = accuracy(part)
            amb = sum(r["right"] is None for r in part)
            cells.append(f"{right}/{n}" + (f" +{amb}a" if amb else "") if part else "-")
        print(f"{kind:<20}" + "".join(f"{c:>14}" for c in cells))
    outcomes = sorted({r["outcome"] for r in rows})
    labels = sorted({r["label"] for r in rows})
    print("\nconfusion (rows: expected, columns: outcome; both parts)")
    print(f"{'':<16}" + "".join(f"{o[:13]:>14}" for o in outcomes))
    counts = Counter((r["label"], r["outcome"]) for r in rows)
    for label in labels:
        print(f"{label:<16}" + "".join(f"{counts.get((label, o), 0):>14}" for o in outcomes))


def calibrate(rows) -> dict:
    tune = [r for r in rows if r["split"] == "tune" and r["kind"] in ("blur", "single", "mirror", "rotated",
                                                                      "contrast", "exposure")]
    sharp = sorted(r["sharpness"] for r in tune if r["label"] == "kept" and r["outcome"] != "no_face")
    blurry = sorted(r["sharpness"] for r in tune if r["label"] == "blurred" and r["sharpness"] > 0)
    candidates = sorted(set(sharp + blurry))
    best = max(candidates, key=lambda t: sum(s >= t for s in sharp) + sum(b < t for b in blurry))
    right = sum(s >= best for s in sharp) + sum(b < best for b in blurry)
    print(f"\ncalibration on the tuning part: sharp faces' sharpness {sharp[:5]} ... (n={len(sharp)}), "
          f"blurred faces' {blurry[-5:]} (n={len(blurry)} with a face found)")
    print(f"best threshold {best:.1f}: {right}/{len(sharp) + len(blurry)} separated; "
          f"gap between the lowest sharp ({sharp[0]:.1f}) and the highest blurred ({blurry[-1]:.1f})")
    return {"sharp_min": sharp[0], "blurred_max": blurry[-1], "best": best}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", choices=("tune", "held_out"))
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--show-wrong", action="store_true")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import cv2

    cv2.setNumThreads(1)
    from bench.face_set import build
    from bench.machine import Machine
    from likeness.detection.app import default_policy, default_weights
    from likeness.detection.backends.factory import create_pipeline
    from likeness.detection.settings import DetectionSettings

    machine = Machine()
    settings = DetectionSettings(detection_identity="none", detection_threads=1)
    pipeline = create_pipeline(settings)
    pipeline.load()
    pipeline.warmup()
    items = build(args.split)
    rows = run(items, pipeline, default_policy(settings), default_weights(settings))
    splits = [s for s in ("tune", "held_out") if any(r["split"] == s for r in rows)]
    sizes = ", ".join(f"{s}: {sum(r['split'] == s for r in rows)}" for s in splits)
    print(f"face judgement on {len(rows)} images ({sizes}), default settings, one core; "
          "cells: right/scored (+ambiguous)\n")
    print_tables(rows, splits)
    per_image = statistics.fmean(r["cpu_s"] for r in rows) * 1000
    mpix = statistics.fmean(r["pixels"] for r in rows) / 1e6
    print(f"\ntime per image: {per_image:.1f} ms CPU (mean; images average {mpix:.2f} Mpx; Assess in-process)")
    summary = {"bench": "faces", "images": len(rows), "ms_per_image_cpu": round(per_image, 2)}
    for s in splits:
        right, n = accuracy([r for r in rows if r["split"] == s])
        summary[f"{s}_right"], summary[f"{s}_scored"] = right, n
        summary[f"{s}_accuracy"] = round(right / n, 4) if n else None
        print(f"{s}: {right}/{n} unambiguous outcomes right ({100 * right / max(n, 1):.1f}%; target >= 97%)")
    if args.show_wrong:
        print("\nwrong:")
        for r in rows:
            if r["right"] is False:
                print(f"  {r['split']:<9} {r['name']:<34} expected {'|'.join(r['expected']):<28} got {r['outcome']}"
                      f" ({r['detail']})")
    if args.calibrate:
        summary["calibration"] = calibrate(rows)
    print(json.dumps({**summary, "machine": machine.done()}))


if __name__ == "__main__":
    main()
