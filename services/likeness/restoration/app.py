"""Restoration service process: builds the servicer from settings, warms the default restorer."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from likeness.api.v1 import restoration_pb2, restoration_pb2_grpc
from likeness.core.image_loader import ImageLoader
from likeness.core.images import ImageLimits
from likeness.core.server import Service, run
from likeness.core.store import open_store
from likeness.restoration.outputs import Outputs
from likeness.restoration.restorers.base import FaceRestorer
from likeness.restoration.restorers.factory import create_restorer
from likeness.restoration.servicer import RestorationServicer
from likeness.restoration.settings import RestorationSettings

log = logging.getLogger("likeness.restoration")
SERVICE_NAME = restoration_pb2.DESCRIPTOR.services_by_name["RestorationService"].full_name


class Restorers:
    """Loaded restorers by name. The default loads in warm-up (missing weights fail start-up);
    others load on first request, and a missing one fails that request with FAILED_PRECONDITION."""

    def __init__(self, settings: RestorationSettings, model_dir=None):
        self._settings = settings
        self._model_dir = model_dir or self._repository_folder
        self._loaded: dict[str, FaceRestorer] = {}
        self._lock = threading.Lock()

    def _repository_folder(self, name: str) -> Path:
        from likeness.core.modelrepo import ModelRepository

        return ModelRepository.from_settings(self._settings).fetch(name)

    def __call__(self, name: str) -> FaceRestorer:
        with self._lock:
            if name not in self._loaded:
                s = self._settings
                restorer = create_restorer(name, self._model_dir, threads=s.restoration_threads,
                                           sharpen=s.restoration_sharpen, local_contrast=s.restoration_local_contrast,
                                           device=s.restoration_device, dtype=s.restoration_dtype)
                restorer.load()
                self._loaded[name] = restorer
            return self._loaded[name]


def placement(settings: RestorationSettings) -> dict:
    """Device and dtype of the network restorers, as start-up logs and Service.description name them."""
    if settings.restoration_backend == "classical":
        return {"device": "cpu", "dtype": "n/a (classical restorer: no network)"}
    from likeness.core.devices import dtype_name, torch_dtype

    return {"device": settings.restoration_device,
            "dtype": dtype_name(torch_dtype(settings.restoration_dtype, settings.restoration_device))}


def create_service(settings: RestorationSettings | None = None, model_dir=None) -> Service:
    """`model_dir(name) -> Path` overrides the model repository (tests)."""
    settings = settings or RestorationSettings()
    store = open_store(settings)
    images = ImageLoader(store, ImageLimits.from_settings(settings))
    restorers = Restorers(settings, model_dir)
    servicer = RestorationServicer(images, Outputs(store, settings.restoration_scratch_prefix), restorers,
                                   settings.restoration_backend, workers=settings.restoration_workers,
                                   max_mask_pixels=settings.max_image_pixels)

    async def warmup() -> None:
        restorer = await asyncio.to_thread(restorers, settings.restoration_backend)
        if settings.restoration_warmup_inference:  # off: weights loaded and checked, first inference on first call
            await asyncio.to_thread(restorer.warmup)  # first inference before SERVING

    return Service.single("restoration", restoration_pb2_grpc.add_RestorationServiceServicer_to_server, servicer,
                          SERVICE_NAME, warmup=warmup, closers=(servicer.close, images.close),
                          description={"restorer": settings.restoration_backend,
                                       "scratch_prefix": settings.restoration_scratch_prefix, **placement(settings)})


def main() -> None:
    run(create_service, RestorationSettings())


if __name__ == "__main__":
    main()
