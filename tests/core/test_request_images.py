"""RequestImages: an input shared by several items of a request is decoded once, kept only until
its last item has it, and a failure is reported under each item's own field."""

from __future__ import annotations

import asyncio

import numpy as np

from likeness.api.v1 import common_pb2
from likeness.core.errors import InvalidArgument
from likeness.core.image_loader import RequestImages


class Loader:
    def __init__(self):
        self.loads: list[tuple[str, str]] = []

    async def load_one(self, pb_input, field: str) -> np.ndarray:
        self.loads.append((pb_input.uri, field))
        await asyncio.sleep(0)
        if pb_input.uri.endswith("bad"):
            raise InvalidArgument(f"{field}.uri", "not found")
        return np.zeros((2, 2, 3), np.uint8)


def uri(u: str) -> common_pb2.ImageInput:
    return common_pb2.ImageInput(uri=u)


def test_a_shared_input_is_decoded_once_and_released_after_its_last_item():
    loader = Loader()
    shared = [uri("base"), uri("mask")] * 3
    images = RequestImages(loader, shared + [uri("alone")])

    async def main():
        return await asyncio.gather(*(images.load(pb, f"items[{i // 2}].{pb.uri}") for i, pb in enumerate(shared)),
                                    images.load(uri("alone"), "items[9].base"), images.load(uri("patch"), "p"))

    out = asyncio.run(main())
    assert sorted(u for u, _ in loader.loads) == ["alone", "base", "mask", "patch"]
    assert out[0] is out[2] is out[4] and not out[0].flags.writeable  # one array, shared read-only
    assert out[-1].flags.writeable  # an input of one item is its own
    assert images._loads == {}  # nothing kept once every item has its images


def test_a_failed_shared_input_names_each_items_own_field():
    loader = Loader()
    images = RequestImages(loader, [uri("bad"), uri("bad")])

    async def main():
        return await asyncio.gather(images.load(uri("bad"), "items[0].base"), images.load(uri("bad"), "items[1].base"),
                                    return_exceptions=True)

    first, second = asyncio.run(main())
    assert isinstance(first, InvalidArgument) and first.field == "items[0].base.uri"
    assert isinstance(second, InvalidArgument) and second.field == "items[1].base.uri"
