"""gRPC face of the restoration service: protobuf <-> domain translation, nothing else.

Conventions (docs/api/restoration.md): a numeric option left at 0 takes its documented default;
a batch of one whose item fails gets the error as the call's status, larger batches get per-item
`ItemError`s; every output is written to the store (and inlined when asked).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import cv2
import numpy as np

from likeness.api.v1 import common_pb2, restoration_pb2, restoration_pb2_grpc
from likeness.core import metrics, tracing
from likeness.core.convert import artifact_pb, item_error_pb
from likeness.core.errors import InvalidArgument, LikenessError, NotFound, check_range
from likeness.core.images import encode_mask_png, encode_png
from likeness.core.uris import validate_key
from likeness.core.workid import sha256_hex, work_id
from likeness.restoration.compositing import DEFAULT_DILATION_PX, DEFAULT_FEATHER_SIGMA, feathered_blend
from likeness.restoration.control_images import canny_map, face_landmark_map, scale_faces
from likeness.restoration.face_restore import FaceToRestore, restore_face
from likeness.restoration.masks import FaceGeometry, MaskOptions, Rect, Region, region_mask
from likeness.restoration.restorers.base import FaceRestorer
from likeness.restoration.seams import seam_measure

MAX_MASKS = 64
MAX_COMPOSITES = 64
MAX_RESTORES = 32
MAX_CONTROL_IMAGES = 16
MAX_CONTROL_FACES = 32
DEFAULT_ALIGN = 8
DEFAULT_CROP_PADDING = 32
DEFAULT_FIDELITY = 0.5
# Algorithm versions in the work ids of masks and composites: bump when their output changes.
MASKS_VERSION = "masks/1"
COMPOSITE_VERSION = "composite/1"
CONTROL_VERSION = "control/1"
REGIONS = {restoration_pb2.REGION_LEFT_EYE: Region.LEFT_EYE, restoration_pb2.REGION_RIGHT_EYE: Region.RIGHT_EYE,
           restoration_pb2.REGION_BOTH_EYES: Region.BOTH_EYES, restoration_pb2.REGION_FACE: Region.FACE}


def landmarks_of(pbs) -> dict[str, tuple[float, float]]:
    """`LANDMARK_KIND_LEFT_EYE` -> `left_eye`; unspecified kinds are ignored."""
    out = {}
    for lm in pbs:
        if lm.kind != common_pb2.LANDMARK_KIND_UNSPECIFIED:
            if lm.kind not in common_pb2.LandmarkKind.values():  # proto3 enums accept any int on the wire
                raise InvalidArgument("landmarks", f"kind {lm.kind} is not a known LandmarkKind")
            name = common_pb2.LandmarkKind.Name(lm.kind).removeprefix("LANDMARK_KIND_").lower()
            out[name] = (lm.point.x, lm.point.y)
    return out


def lids_of(pbs, side: str) -> tuple[tuple[float, float], ...] | None:
    """The closed lid contour of the subject's `side` eye (`left`/`right`): its lower lid then its
    upper lid reversed, from the repeated LANDMARK_KIND_<SIDE>_LOWER_LID / _UPPER_LID points in the
    order sent; None unless both lids have 2 or more points."""
    lower_kind = common_pb2.LandmarkKind.Value(f"LANDMARK_KIND_{side.upper()}_LOWER_LID")
    upper_kind = common_pb2.LandmarkKind.Value(f"LANDMARK_KIND_{side.upper()}_UPPER_LID")
    lower = [(lm.point.x, lm.point.y) for lm in pbs if lm.kind == lower_kind]
    upper = [(lm.point.x, lm.point.y) for lm in pbs if lm.kind == upper_kind]
    if len(lower) < 2 or len(upper) < 2:
        return None
    return tuple(lower + upper[::-1])


def box_of(msg, name: str) -> tuple[float, float, float, float] | None:
    if not msg.HasField(name):
        return None
    b = getattr(msg, name)
    return b.x_min, b.y_min, b.x_max, b.y_max


def rect_pb(r: Rect) -> common_pb2.Box:
    return common_pb2.Box(x_min=r.x0, y_min=r.y0, x_max=r.x1, y_max=r.y1)


def pixel_rect(box: tuple[float, float, float, float] | None, field: str) -> Rect | None:
    """A Box that must sit on whole pixels (RegionMask's crop boxes do)."""
    if box is None:
        return None
    if not all(math.isfinite(v) and abs(v - round(v)) < 1e-3 for v in box):
        raise InvalidArgument(field, f"{box} must have whole-pixel coordinates")
    return Rect(*(round(v) for v in box))


def _batch(n: int, limit: int) -> None:
    if not 1 <= n <= limit:
        raise InvalidArgument("items", f"batch of {n} items; send 1 to {limit}")


def seam_pb(base, patch, out, mask, box) -> restoration_pb2.Seam:
    """The composite's seam, with a crop patch placed in the base's frame first."""
    if box is not None:
        full = base.copy()
        full[box.slices] = patch
        patch = full
    s = seam_measure(base, patch, out, mask)
    return restoration_pb2.Seam(boundary_gradient=s.boundary_gradient, hard_gradient=s.hard_gradient,
                                max_step=s.max_step, reference_step=s.reference_step)


def _raise_single(errors: list[LikenessError | None]) -> None:
    if len(errors) == 1 and errors[0] is not None:
        raise errors[0]


class Outputs:
    """Writes outputs under `<prefix>/<kind>/<work id>.png`, the id being the hash of the item's
    canonical inputs and the algorithm or model identity (core/workid.py): a rerun finds finished
    work (`find`) and skips it; the same inputs always land on the same key."""

    def __init__(self, store, scratch_prefix: str):
        self.store, self.scratch = store, scratch_prefix.strip("/")

    def prefix(self, requested: str) -> str:
        prefix = requested.strip("/") or self.scratch
        validate_key(prefix, "output_prefix")
        return prefix

    @staticmethod
    def key(prefix: str, kind: str, wid: str) -> str:
        return f"{prefix}/{kind}/{wid}.png"

    def find(self, prefix: str, kind: str, wid: str, inline: bool):
        key = self.key(prefix, kind, wid)
        try:
            obj = self.store.stat(key)
        except NotFound:
            return None
        return artifact_pb(obj, self.store.get(key) if inline else None)

    def put(self, prefix: str, kind: str, wid: str, png: bytes, inline: bool):
        obj = self.store.put(self.key(prefix, kind, wid), png, "image/png")
        return artifact_pb(obj, png if inline else None)


def pixels_id(rgb: np.ndarray) -> str:
    """Identity of decoded pixels (two encodings of the same pixels are the same input)."""
    return f"{rgb.shape}:{sha256_hex(np.ascontiguousarray(rgb).data)}"


class RestorationServicer(restoration_pb2_grpc.RestorationServiceServicer):
    def __init__(self, images, outputs: Outputs, restorer: Callable[[str], FaceRestorer], default_model: str,
                 workers: int = 2, max_mask_pixels: int | None = None):
        self._images, self._outputs = images, outputs
        self._max_mask_pixels = max_mask_pixels  # masks obey the same pixel limit as input images
        self._restorer, self._default_model = restorer, default_model
        self._cpu = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restoration-cpu")
        # items in flight across all calls: bounds the decoded images held in memory at once
        self._slots = asyncio.Semaphore(workers)
        # one model worker: network inference is serialised (a pod is sized for one model's worth)
        self._models = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restoration-model")

    def close(self) -> None:
        self._cpu.shutdown(wait=False, cancel_futures=True)
        self._models.shutdown(wait=False, cancel_futures=True)

    async def _cpu_run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    async def _model_run(self, fn, *args):
        return await tracing.run_on_worker(self._models, fn, *args)

    async def RegionMask(self, request, context):
        _batch(len(request.items), MAX_MASKS)
        if request.region not in REGIONS:
            raise InvalidArgument("region", f"{request.region} is not set or unknown; one of REGION_LEFT_EYE, "
                                            "REGION_RIGHT_EYE, REGION_BOTH_EYES, REGION_FACE")
        region = REGIONS[request.region]
        opts = MaskOptions(padding_iod=request.padding_iod, padding_px=request.padding_px,
                           align=request.align or DEFAULT_ALIGN,
                           crop_padding=request.crop_padding or DEFAULT_CROP_PADDING)
        prefix = self._outputs.prefix(request.output_prefix)

        def build(i: int, item) -> restoration_pb2.RegionMaskResult:
            geo = FaceGeometry(item.width, item.height, *(landmarks_of(item.landmarks).get(k)
                                                         for k in ("left_eye", "right_eye")),
                               face_box=box_of(item, "face_box"), left_eye_lids=lids_of(item.landmarks, "left"),
                               right_eye_lids=lids_of(item.landmarks, "right"))
            built = region_mask(geo, region, opts, field=f"items[{i}]", max_pixels=self._max_mask_pixels)
            wid = work_id("region_mask", {"region": region.value, "geometry": asdict(geo), "options": asdict(opts)},
                          MASKS_VERSION)
            artifact = (self._outputs.find(prefix, "masks", wid, request.return_inline)
                        or self._outputs.put(prefix, "masks", wid, encode_mask_png(built.mask), request.return_inline))
            return restoration_pb2.RegionMaskResult(index=i, mask=artifact, crop_box=rect_pb(built.crop),
                                                    area=built.area)

        results = await asyncio.gather(*(self._guard("region_mask", build, i, item)
                                         for i, item in enumerate(request.items)))
        _raise_single([e for _, e in results])
        response = restoration_pb2.RegionMaskResponse()
        for i, (result, error) in enumerate(results):
            response.results.append(result if error is None else restoration_pb2.RegionMaskResult(
                index=i, error=item_error_pb(i, error)))
        return response

    async def _guard(self, stage: str, fn, *args):
        """(result, None) or (None, error) for one item, run off the event loop."""
        try:
            async with self._slots:
                result = await self._cpu_run(fn, *args)
        except LikenessError as exc:
            metrics.ITEMS.labels("restoration", stage, "failed").inc()
            return None, exc
        metrics.ITEMS.labels("restoration", stage, "ok").inc()
        return result, None

    async def Composite(self, request, context):
        _batch(len(request.items), MAX_COMPOSITES)
        sigma = request.feather_sigma or DEFAULT_FEATHER_SIGMA
        dilation = request.dilation_px or DEFAULT_DILATION_PX
        check_range(sigma, "feather_sigma", 0.0, 128.0, unit="px")
        check_range(dilation, "dilation_px", 0.0, 256.0, unit="px")
        prefix = self._outputs.prefix(request.output_prefix)

        async def one(i: int, item):
            field = f"items[{i}]"

            def composite(base, patch, mask, box) -> restoration_pb2.CompositeResult:
                mask = np.ascontiguousarray(mask[..., 0])
                out = feathered_blend(base, patch, mask, box, sigma, dilation, field=field)  # validates
                seam = seam_pb(base, patch, out, mask, box)
                params = {"feather_sigma": sigma, "dilation_px": dilation, "patch_box": box and asdict(box)}
                wid = work_id("composite", {"base": pixels_id(base), "patch": pixels_id(patch),
                                            "mask": pixels_id(mask), **params}, COMPOSITE_VERSION)
                artifact = self._outputs.find(prefix, "composites", wid, request.return_inline)
                if artifact is None:
                    png = encode_png(out, request={"restoration": "composite", **params})
                    artifact = self._outputs.put(prefix, "composites", wid, png, request.return_inline)
                return restoration_pb2.CompositeResult(index=i, image=artifact, seam=seam)

            async with self._slots:  # decoded images of at most `workers` items are held at once
                try:
                    box = pixel_rect(box_of(item, "patch_box"), f"{field}.patch_box")
                    base, patch, mask = await asyncio.gather(
                        self._images.load_one(item.base, f"{field}.base"),
                        self._images.load_one(item.patch, f"{field}.patch"),
                        self._images.load_one(item.mask, f"{field}.mask"))
                    result = await self._cpu_run(composite, base, patch, mask, box)
                except LikenessError as exc:
                    metrics.ITEMS.labels("restoration", "composite", "failed").inc()
                    return None, exc
            metrics.ITEMS.labels("restoration", "composite", "ok").inc()
            return result, None

        results = await asyncio.gather(*(one(i, item) for i, item in enumerate(request.items)))
        _raise_single([e for _, e in results])
        response = restoration_pb2.CompositeResponse()
        for i, (result, error) in enumerate(results):
            response.results.append(result if error is None else restoration_pb2.CompositeResult(
                index=i, error=item_error_pb(i, error)))
        return response

    async def _restore_item(self, image, face: FaceToRestore, restorer: FaceRestorer, fidelity: float,
                            prefix: str, inline: bool, field: str):
        """Finished work is found by its id; otherwise restore on the model worker and store."""
        pixels = await self._cpu_run(pixels_id, image)
        wid = work_id("restore", {"image": pixels, "face": asdict(face), "fidelity": fidelity}, restorer.identity)
        artifact = await self._cpu_run(self._outputs.find, prefix, "restored", wid, inline)
        if artifact is None:
            out = await self._model_run(restore_face, image, face, restorer, fidelity, field)
            png = await self._cpu_run(encode_png, out, None, {"restoration": "restore", "model": restorer.identity,
                                                              "fidelity": fidelity})
            artifact = await self._cpu_run(self._outputs.put, prefix, "restored", wid, png, inline)
        return artifact

    async def Restore(self, request, context):
        _batch(len(request.items), MAX_RESTORES)
        fidelity = request.fidelity if request.HasField("fidelity") else DEFAULT_FIDELITY
        check_range(fidelity, "fidelity", 0.0, 1.0)
        name = request.model or self._default_model
        restorer = await self._model_run(self._restorer, name)  # unknown or missing weights: whole call fails
        prefix = self._outputs.prefix(request.output_prefix)
        errors: list[LikenessError | None] = [None] * len(request.items)
        response = restoration_pb2.RestoreResponse(model=restorer.name, stand_in=getattr(restorer, "stand_in", ""))
        for i, item in enumerate(request.items):  # one at a time: the model worker is serial anyway
            field = f"items[{i}]"
            try:
                image = await self._images.load_one(item.image, f"{field}.image")
                face = FaceToRestore(box_of(item, "face_box"), landmarks_of(item.landmarks))
                artifact = await self._restore_item(image, face, restorer, fidelity, prefix, request.return_inline,
                                                    field)
            except LikenessError as exc:
                errors[i] = exc
                response.results.add(index=i, error=item_error_pb(i, exc))
                metrics.ITEMS.labels("restoration", "restore", "failed").inc()
                continue
            response.results.add(index=i, image=artifact)
            metrics.ITEMS.labels("restoration", "restore", "ok").inc()
        _raise_single(errors)
        return response

    async def ControlImage(self, request, context):
        _batch(len(request.items), MAX_CONTROL_IMAGES)
        kinds = {restoration_pb2.CONTROL_KIND_FACE_LANDMARKS: "face_landmarks", restoration_pb2.CONTROL_KIND_CANNY: "canny"}
        if request.kind not in kinds:
            raise InvalidArgument("kind", f"{request.kind} is not set or unknown; CONTROL_KIND_FACE_LANDMARKS or "
                                          "CONTROL_KIND_CANNY")
        kind = kinds[request.kind]
        low = request.canny_low if request.HasField("canny_low") else 100.0
        high = request.canny_high if request.HasField("canny_high") else 200.0
        prefix = self._outputs.prefix(request.output_prefix)

        for name in ("width", "height"):
            value = getattr(request, name)
            if value and not 64 <= value <= 4096:
                raise InvalidArgument(name, f"{value} is outside [64, 4096] px (0 keeps the photo's size)")

        def render(image, faces, field: str) -> common_pb2.Artifact:
            h, w = image.shape[:2]
            size = (request.width or w, request.height or h)
            if kind == "face_landmarks":
                out = face_landmark_map(size[0], size[1], scale_faces(faces, size[0] / w, size[1] / h), field)
            else:
                out = canny_map(cv2.resize(image, size, interpolation=cv2.INTER_AREA) if size != (w, h) else image,
                                low, high)
            params = {"kind": kind, "faces": faces, "size": size, "canny": [low, high] if kind == "canny" else None}
            wid = work_id("control_image", {"image": pixels_id(image), **params}, CONTROL_VERSION)
            return (self._outputs.find(prefix, "controls", wid, request.return_inline)
                    or self._outputs.put(prefix, "controls", wid, encode_png(out), request.return_inline))

        async def one(i: int, item):
            field = f"items[{i}]"
            try:
                if len(item.faces) > MAX_CONTROL_FACES:
                    raise InvalidArgument(f"{field}.faces", f"{len(item.faces)} faces, over the limit of "
                                                            f"{MAX_CONTROL_FACES}")
                faces = [(box_of(f, "box"), landmarks_of(f.landmarks)) for f in item.faces]
                image = await self._images.load_one(item.image, f"{field}.image")
                artifact = await self._cpu_run(render, image, faces, field)
            except LikenessError as exc:
                metrics.ITEMS.labels("restoration", "control_image", "failed").inc()
                return None, exc
            metrics.ITEMS.labels("restoration", "control_image", "ok").inc()
            return restoration_pb2.ControlImageResult(index=i, image=artifact), None

        results = await asyncio.gather(*(one(i, item) for i, item in enumerate(request.items)))
        _raise_single([e for _, e in results])
        response = restoration_pb2.ControlImageResponse()
        for i, (result, error) in enumerate(results):
            response.results.append(result if error is None else restoration_pb2.ControlImageResult(
                index=i, error=item_error_pb(i, error)))
        return response

