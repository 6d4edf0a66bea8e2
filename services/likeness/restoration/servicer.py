"""gRPC face of the restoration service: protobuf <-> domain translation, nothing else. Every output
is written to the store (and inlined when asked); batches follow core/batch.py's rules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from grpc.aio import ServicerContext

from likeness.api.v1 import restoration_pb2 as pb
from likeness.api.v1 import restoration_pb2_grpc
from likeness.core.batch import Outcome, check_batch, each_item
from likeness.core.convert import item_results_pb
from likeness.core.errors import check_range
from likeness.core.image_loader import ImageLoader, RequestImages
from likeness.core.images import encode_mask_png
from likeness.core.worker import ModelWorker
from likeness.restoration import convert
from likeness.restoration.masks import region_mask
from likeness.restoration.outputs import Outputs, composite_output, control_output, mask_work_id, restored_output
from likeness.restoration.restorers.base import FaceRestorer

MAX_MASKS = 64
MAX_COMPOSITES = 64
MAX_RESTORES = 32
MAX_CONTROL_IMAGES = 16


class RestorationServicer(restoration_pb2_grpc.RestorationServiceServicer):
    def __init__(self, images: ImageLoader, outputs: Outputs, restorer: Callable[[str], FaceRestorer],
                 default_model: str, workers: int = 2, max_mask_pixels: int | None = None):
        self._images, self._outputs = images, outputs
        self._max_mask_pixels = max_mask_pixels  # masks obey the same pixel limit as input images
        self._restorer, self._default_model = restorer, default_model
        self._cpu = ModelWorker("restoration", threads=workers, name="cpu")
        # items in flight across all calls: bounds the decoded images held in memory at once
        self._slots = asyncio.Semaphore(workers)
        self._model = ModelWorker("restoration")  # network inference is serialised

    def close(self) -> None:
        self._cpu.close()
        self._model.close()

    async def _each(self, stage: str, items: Sequence, fn: Callable[[int, object], Awaitable],
                    sequential: bool = False) -> list[Outcome]:
        async def bounded(i: int, item):
            async with self._slots:  # decoded images of at most `workers` items are held at once
                return await fn(i, item)

        return await each_item(items, bounded, count=lambda outcome: self._cpu.count(stage, outcome),
                               sequential=sequential)

    async def RegionMask(self, request: pb.RegionMaskRequest, context: ServicerContext) -> pb.RegionMaskResponse:
        check_batch(len(request.items), MAX_MASKS, "items")
        region, opts = convert.region_of(request.region), convert.mask_options(request)
        prefix = self._outputs.prefix(request.output_prefix)

        def build(i: int, item) -> pb.RegionMaskResult:
            geo = convert.geometry_of(item)
            built = region_mask(geo, region, opts, field=f"items[{i}]", max_pixels=self._max_mask_pixels)
            artifact = self._outputs.find_or_put(prefix, "masks", mask_work_id(region, geo, opts),
                                                 lambda: encode_mask_png(built.mask), request.return_inline)
            return pb.RegionMaskResult(index=i, mask=artifact, crop_box=convert.rect_pb(built.crop), area=built.area)

        outcomes = await self._each("region_mask", request.items, lambda i, item: self._cpu.run(build, i, item))
        return pb.RegionMaskResponse(results=item_results_pb(outcomes, pb.RegionMaskResult))

    async def Composite(self, request: pb.CompositeRequest, context: ServicerContext) -> pb.CompositeResponse:
        check_batch(len(request.items), MAX_COMPOSITES, "items")
        sigma, dilation = convert.feather_of(request)
        prefix = self._outputs.prefix(request.output_prefix)
        # a base or mask that several items share is decoded once
        images = RequestImages(self._images, [getattr(it, n) for it in request.items for n in ("base", "mask")])

        async def one(i: int, item):
            field = f"items[{i}]"
            box = convert.pixel_rect(convert.box_of(item, "patch_box"), f"{field}.patch_box")
            base, patch, mask = await asyncio.gather(*(images.load(getattr(item, name), f"{field}.{name}")
                                                       for name in ("base", "patch", "mask")))
            return await self._cpu.run(composite_output, self._outputs, prefix, (base, patch, mask), box, sigma,
                                       dilation, field, request.return_inline)

        outcomes = await self._each("composite", request.items, one)
        return pb.CompositeResponse(results=item_results_pb(
            outcomes, pb.CompositeResult, lambda i, done: pb.CompositeResult(index=i, image=done[0], seam=done[1])))

    async def Restore(self, request: pb.RestoreRequest, context: ServicerContext) -> pb.RestoreResponse:
        check_batch(len(request.items), MAX_RESTORES, "items")
        fidelity = convert.fidelity_of(request)
        check_range(fidelity, "fidelity", 0.0, 1.0)
        # an unknown model or missing weights fail the whole call
        restorer = await self._model.run(self._restorer, request.model or self._default_model)
        prefix = self._outputs.prefix(request.output_prefix)

        async def one(i: int, item):
            image = await self._images.load_one(item.image, f"items[{i}].image")
            return await restored_output(self._outputs, (self._cpu, self._model), prefix, image,
                                         convert.face_of(item), restorer, fidelity, f"items[{i}]",
                                         request.return_inline)

        # one at a time: the model worker is serial anyway
        outcomes = await self._each("restore", request.items, one, sequential=True)
        return pb.RestoreResponse(model=restorer.name, stand_in=getattr(restorer, "stand_in", ""),
                                  results=item_results_pb(outcomes, pb.RestoreResult, convert.restore_result_pb))

    async def ControlImage(self, request: pb.ControlImageRequest, context: ServicerContext) -> pb.ControlImageResponse:
        check_batch(len(request.items), MAX_CONTROL_IMAGES, "items")
        options, prefix = convert.control_options(request), self._outputs.prefix(request.output_prefix)

        async def one(i: int, item):
            faces = convert.control_faces(item, f"items[{i}]")
            image = await self._images.load_one(item.image, f"items[{i}].image")
            return await self._cpu.run(control_output, self._outputs, prefix, image, faces, options, f"items[{i}]",
                                       request.return_inline)

        outcomes = await self._each("control_image", request.items, one)
        return pb.ControlImageResponse(results=item_results_pb(outcomes, pb.ControlImageResult, "image"))
