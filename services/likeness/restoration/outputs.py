"""Where restoration outputs live in the store, and the work ids that name them.

Every output is written under `<prefix>/<kind>/<work id>.png`, the id being the hash of the item's
canonical inputs and the algorithm or model identity (core/workid.py): a rerun finds finished work
and skips it; the same inputs always land on the same key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import cv2
import numpy as np

from likeness.api.v1 import common_pb2, restoration_pb2
from likeness.core.convert import artifact_pb
from likeness.core.errors import NotFound
from likeness.core.images import decode_image, encode_png
from likeness.core.uris import validate_key
from likeness.core.workid import sha256_hex, work_id
from likeness.restoration.compositing import feathered_blend
from likeness.restoration.control_images import canny_map, face_landmark_map, scale_faces
from likeness.restoration.convert import seam_pb
from likeness.restoration.face_restore import FaceToRestore, restore_face
from likeness.restoration.masks import FaceGeometry, MaskOptions, Rect, Region, mask_bbox

# Algorithm versions in the work ids of masks and composites: bump when their output changes.
MASKS_VERSION = "masks/1"
COMPOSITE_VERSION = "composite/1"
CONTROL_VERSION = "control/1"


def pixels_id(rgb: np.ndarray) -> str:
    """Identity of decoded pixels (two encodings of the same pixels are the same input)."""
    return f"{rgb.shape}:{sha256_hex(np.ascontiguousarray(rgb).data)}"


def mask_work_id(region: Region, geo: FaceGeometry, opts: MaskOptions) -> str:
    return work_id("region_mask", {"region": region.value, "geometry": asdict(geo), "options": asdict(opts)},
                   MASKS_VERSION)


def composite_params(sigma: float, dilation: float, box: Rect | None) -> dict:
    """The blend parameters as recorded in the work id and the PNG metadata."""
    return {"feather_sigma": sigma, "dilation_px": dilation, "patch_box": box and asdict(box)}


def composite_work_id(base: np.ndarray, patch: np.ndarray, mask: np.ndarray, params: dict) -> str:
    return work_id("composite", {"base": pixels_id(base), "patch": pixels_id(patch), "mask": pixels_id(mask),
                                 **params}, COMPOSITE_VERSION)


def restore_work_id(image: np.ndarray, face: FaceToRestore, fidelity: float, identity: str) -> str:
    return work_id("restore", {"image": pixels_id(image), "face": asdict(face), "fidelity": fidelity}, identity)


class Outputs:
    """The store under a scratch prefix (used when a request names none)."""

    def __init__(self, store, scratch_prefix: str):
        self.store, self.scratch = store, scratch_prefix.strip("/")

    def prefix(self, requested: str) -> str:
        prefix = requested.strip("/") or self.scratch
        validate_key(prefix, "output_prefix")
        return prefix

    @staticmethod
    def key(prefix: str, kind: str, wid: str) -> str:
        return f"{prefix}/{kind}/{wid}.png"

    def find(self, prefix: str, kind: str, wid: str, inline: bool) -> common_pb2.Artifact | None:
        key = self.key(prefix, kind, wid)
        try:
            obj = self.store.stat(key)
        except NotFound:
            return None
        return artifact_pb(obj, self.store.get(key) if inline else None)

    def put(self, prefix: str, kind: str, wid: str, png: bytes, inline: bool) -> common_pb2.Artifact:
        obj = self.store.put(self.key(prefix, kind, wid), png, "image/png")
        return artifact_pb(obj, png if inline else None)

    def find_or_put(self, prefix: str, kind: str, wid: str, png: Callable[[], bytes],
                    inline: bool) -> common_pb2.Artifact:
        """The stored output of work `wid`, or `png()` stored now when there is none."""
        return self.find(prefix, kind, wid, inline) or self.put(prefix, kind, wid, png(), inline)


def composite_output(outputs: Outputs, prefix: str, images: tuple[np.ndarray, np.ndarray, np.ndarray],
                     box: Rect | None, sigma: float, dilation: float, field: str,
                     inline: bool) -> tuple[common_pb2.Artifact, restoration_pb2.Seam]:
    """Blends `patch` into `base` through `mask` (the first channel of its decoded image) and
    stores the result, or finds it stored by an earlier run; returns it with its measured seam.
    Validates the three images."""
    base, patch, mask = images
    mask = np.ascontiguousarray(mask[..., 0])
    out = feathered_blend(base, patch, mask, box, sigma, dilation, field=field)
    seam = seam_pb(base, patch, out, mask, box)
    params = composite_params(sigma, dilation, box)
    artifact = outputs.find_or_put(prefix, "composites", composite_work_id(base, patch, mask, params),
                                   lambda: encode_png(out, request={"restoration": "composite", **params}), inline)
    return artifact, seam


def control_output(outputs: Outputs, prefix: str, image: np.ndarray, faces: list, options: dict, field: str,
                   inline: bool) -> common_pb2.Artifact:
    """The control image (a face-landmark map or a Canny edge map) of `image` at the requested size,
    stored under its work id, or found stored by an earlier run."""
    h, w = image.shape[:2]
    kind, low, high = options["kind"], options["low"], options["high"]
    size = (options["width"] or w, options["height"] or h)
    if kind == "face_landmarks":
        out = face_landmark_map(size[0], size[1], scale_faces(faces, size[0] / w, size[1] / h), field)
    else:
        out = canny_map(cv2.resize(image, size, interpolation=cv2.INTER_AREA) if size != (w, h) else image, low, high)
    params = {"kind": kind, "faces": faces, "size": size, "canny": [low, high] if kind == "canny" else None}
    wid = work_id("control_image", {"image": pixels_id(image), **params}, CONTROL_VERSION)
    return outputs.find_or_put(prefix, "controls", wid, lambda: encode_png(out), inline)


def changed_pixels(before: np.ndarray, after: np.ndarray) -> tuple[int, Rect | None]:
    """How many pixels of `after` differ (in any channel) from `before`, and their bounding box;
    every pixel when the sizes differ (a stored output replaced by another image)."""
    if before.shape != after.shape:
        return after.shape[0] * after.shape[1], Rect(0, 0, after.shape[1], after.shape[0])
    changed = (before != after).any(axis=2)
    return int(np.count_nonzero(changed)), mask_bbox(changed.view(np.uint8))


async def restored_output(outputs: Outputs, workers: tuple, prefix: str, image: np.ndarray, face: FaceToRestore,
                          restorer, fidelity: float, field: str,
                          inline: bool) -> tuple[common_pb2.Artifact, int, Rect | None]:
    """Finished work is found by its id (and decoded to count what it changed); otherwise the face
    is restored on the model worker and stored. Returns the output with its changed pixels (count,
    bounding box). `workers`: (CPU worker, model worker)."""
    cpu, model = workers
    wid = await cpu.run(restore_work_id, image, face, fidelity, restorer.identity)
    artifact = await cpu.run(outputs.find, prefix, "restored", wid, inline)
    if artifact is not None:
        stored = await cpu.run(lambda: decode_image(outputs.store.get(artifact.uri), field))
        return artifact, *await cpu.run(changed_pixels, image, stored)
    out = await model.run(restore_face, image, face, restorer, fidelity, field)
    png = await cpu.run(encode_png, out, None, {"restoration": "restore", "model": restorer.identity,
                                                "fidelity": fidelity})
    artifact = await cpu.run(outputs.put, prefix, "restored", wid, png, inline)
    return artifact, *await cpu.run(changed_pixels, image, out)
