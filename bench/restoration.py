"""Restoration stages on a 1024x1024 portrait, on ONE CPU core, measured side by side in one run.

    python bench/restoration.py [--quick]

Stages of the eye fix against a slow reference pipeline's timings (crop and mask 1.8 s, blend 1.5 s, metadata 3.2 s) and
face restoration, each next to the floor (copying the image's bytes once in memory, what any
stage that returns a new image must pay) and next to a naive way of doing the same thing:
1. eye crop and mask: `region_mask(BOTH_EYES)` (full-size mask + aligned crop box) and the crop's
   pixels; naive: the same ellipses drawn by evaluating the ellipse over the whole frame. The
   service also encodes the mask as PNG (shown on its own row).
2. feathered composite: `feathered_blend` of the eye crop (touches only the mask's surroundings);
   naive: the same feather computed and blended over the whole frame.
3. classical restore of the face region: `restore_face` (crop, denoise, sharpen, feathered paste-back).
4. PNG metadata write: `add_png_metadata` on the encoded 1024 PNG (inserts chunks); naive:
   encoding the pixels again with the metadata.
Everything runs pinned to one core with one thread per library; variants are interleaved round by
round so machine noise hits all of them; medians are reported.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))
sys.path.insert(0, str(ROOT))

from machine import Machine  # noqa: E402
from timing import interleaved, medians, print_spreads  # noqa: E402

SEED_MS = {"crop_and_mask": 1800.0, "composite": 1500.0, "metadata": 3200.0}
# Targets per 1024x1024 image on one core; the mask's PNG encoding has none (it is zlib over 1 MiB of mask, shown so the
# service's full cost of RegionMask is visible).
TARGET_MS = {"crop_and_mask": 10.0, "mask_png": None, "composite": 10.0, "seam": 10.0, "metadata": 10.0,
             "restore": 50.0}
SCALE = 2.0  # skimage astronaut (512) -> 1024


def naive_mask(geo, iod_axes):
    """Ellipses evaluated over every pixel of the frame (what a whole-image mask build costs)."""
    import math

    import numpy as np

    from likeness.restoration.masks import inter_ocular

    _, angle = inter_ocular(geo, "bench")
    t = math.radians(angle)
    ys, xs = np.mgrid[0:geo.height, 0:geo.width].astype(np.float32) + 0.5
    mask = np.zeros((geo.height, geo.width), np.uint8)
    for cx, cy in (geo.left_eye, geo.right_eye):
        u = ((xs - cx) * math.cos(t) + (ys - cy) * math.sin(t)) / iod_axes[0]
        v = ((ys - cy) * math.cos(t) - (xs - cx) * math.sin(t)) / iod_axes[1]
        mask[u * u + v * v <= 1] = 255
    return mask


def naive_blend(base, patch_full, mask, sigma, dilation):
    """The feather over the whole frame: distance, blur and blend of every pixel."""
    import numpy as np

    from likeness.restoration.compositing import feathered_alpha

    alpha = feathered_alpha(mask, sigma, dilation)[..., None]
    b = base.astype(np.float32)
    return np.rint(b + alpha * (patch_full.astype(np.float32) - b)).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 30 s)")
    args = parser.parse_args()
    machine = Machine()
    reps = 7 if args.quick else 41
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    from likeness.core.images import encode_mask_png, encode_png
    from likeness.core.pngmeta import add_png_metadata, format_parameters
    from likeness.restoration.compositing import feathered_blend
    from likeness.restoration.face_restore import FaceToRestore, restore_face
    from likeness.restoration.masks import (
        EYE_HALF_HEIGHT_IOD,
        EYE_HALF_LENGTH_IOD,
        FaceGeometry,
        MaskOptions,
        Region,
        region_mask,
    )
    from likeness.restoration.restorers.classical import ClassicalRestorer
    from likeness.restoration.seams import seam_measure
    from tests.photos import skimage_photo
    from tests.restoration import astronaut as A

    def s(p):
        return (p[0] * SCALE, p[1] * SCALE)

    image = np.ascontiguousarray(cv2.resize(skimage_photo("astronaut"), (1024, 1024), interpolation=cv2.INTER_CUBIC))
    geo = FaceGeometry(1024, 1024, s(A.LEFT_EYE), s(A.RIGHT_EYE), tuple(v * SCALE for v in A.FACE_BOX))
    iod = A.IOD * SCALE
    built = region_mask(geo, Region.BOTH_EYES, MaskOptions())
    crop = built.crop
    patch = np.clip(image[crop.slices].astype(np.int16) + 30, 0, 255).astype(np.uint8)  # an "inpainted" crop
    patch_full = image.copy()
    patch_full[crop.slices] = patch
    face = FaceToRestore(geo.face_box, {"left_eye": geo.left_eye, "right_eye": geo.right_eye,
                                        "mouth_center": s(A.MOUTH_CENTER)})
    restorer = ClassicalRestorer()
    png = encode_png(image)
    params = format_parameters("portrait, eyes open", "closed eyes", 30, "DPM++ 2M", 7.0, 42, 1024, 1024, "sdxl-base")
    request = {"job": "open-eyes", "stages": ["detect", "mask", "inpaint", "composite", "restore"]}

    composited = feathered_blend(image, patch, built.mask, crop)

    def crop_and_mask():
        m = region_mask(geo, Region.BOTH_EYES, MaskOptions())
        return image[m.crop.slices].copy()

    variants = {
        "floor": lambda: image.copy(),
        "crop_and_mask": crop_and_mask,
        "mask_png": lambda: encode_mask_png(built.mask),
        "crop_and_mask_naive": lambda: naive_mask(geo, (EYE_HALF_LENGTH_IOD * iod, EYE_HALF_HEIGHT_IOD * iod)),
        "composite": lambda: feathered_blend(image, patch, built.mask, crop),
        "composite_naive": lambda: naive_blend(image, patch_full, built.mask, 6.0, 4.0),
        "seam": lambda: seam_measure(image, patch_full, composited, built.mask),
        "restore": lambda: restore_face(image, face, restorer, 0.5),
        "metadata": lambda: add_png_metadata(png, params, request),
        "metadata_naive": lambda: encode_png(image, params, request),
    }
    for fn in variants.values():  # warm caches and lazy imports
        fn()
    times = interleaved(variants, reps)
    ms = medians(times, scale=1e3)

    floor = ms["floor"]
    rows = [
        ("eye crop and mask", "crop_and_mask", "crop_and_mask_naive", "whole-frame ellipse"),
        ("  + mask PNG (service out)", "mask_png", None, ""),
        ("feathered composite", "composite", "composite_naive", "whole-frame feather"),
        ("seam measure of a composite", "seam", None, ""),
        ("classical restore (face)", "restore", None, ""),
        ("PNG metadata write", "metadata", "metadata_naive", "re-encode with metadata"),
    ]
    print(f"1024x1024 astronaut, one core, median of {reps} interleaved rounds; floor = copy of the "
          f"image's bytes ({image.nbytes / 2**20:.1f} MiB) = {floor:.3f} ms")
    head = (f"{'stage':26} {'ms':>8} {'x floor':>8} {'seed ms':>8} {'seed/ours':>10} {'target':>7} "
            f"{'naive ms':>9} {'naive/ours':>10}")
    print(head)
    print("-" * len(head))
    figures = {"floor_ms": round(floor, 4), "reps": reps}
    for label, key, naive, _ in rows:
        seed = SEED_MS.get(key)
        target = TARGET_MS[key]
        ok = "" if target is None else ("ok" if ms[key] <= target else "MISS")
        print(f"{label:26} {ms[key]:8.3f} {ms[key] / floor:8.1f} {seed or float('nan'):8.0f} "
              f"{(seed / ms[key]) if seed else float('nan'):10.0f} {target or float('nan'):5.0f}{ok:>3} "
              f"{ms[naive] if naive else float('nan'):9.2f} {(ms[naive] / ms[key]) if naive else float('nan'):10.1f}")
        figures[f"{key}_ms"] = round(ms[key], 4)
        figures[f"{key}_over_floor"] = round(ms[key] / floor, 2)
        if seed:
            figures[f"{key}_seed_over_ours"] = round(seed / ms[key], 1)
        if naive:
            figures[f"{key}_naive_ms"] = round(ms[naive], 4)
            figures[f"{key}_naive_over_ours"] = round(ms[naive] / ms[key], 2)
        if target is not None:
            figures[f"{key}_within_target"] = ms[key] <= target
    print("naive: " + "; ".join(f"{label}: {naive_label}" for label, _, n, naive_label in rows if n))
    figures["spreads"] = print_spreads(times)
    print(json.dumps({**figures, "machine": machine.done()}, sort_keys=True))


if __name__ == "__main__":
    main()
