"""Every request kind on both engines (tiny-sdxl): task x quality mode x sampler x engine.

Each row runs on the torch engine and on the onnxruntime engine. Plain rows run the ONNX graphs
there and must match torch within the parity tolerance (8-bit pixels: max 2 levels); LoRA and
IP-Adapter rows are served by the onnxruntime engine's composed torch engine and must match
bit for bit. The rows cover every task with both engines, every quality mode and every sampler
(a full product would be 7 x 4 x 6 x 2 = 336 generations); steps are fixed at 4 so presets
still choose the size and the refiner pass. tiny-sdxl images are noise: mechanics only.
"""

from __future__ import annotations

import numpy as np
import pytest

from likeness.api.v1 import common_pb2
from likeness.api.v1 import generation_pb2 as G
from likeness.core.images import decode_image
from likeness.core.pngmeta import read_png_metadata
from tests.generation.conftest import engine_of
from tests.generation.test_lora_service import _make_lora
from tests.generation.test_service import png_bytes

Q, S = G.QualityMode, G.Sampler
# (task, quality mode, sampler, extra request fields, expected side, path on the onnxruntime engine)
ROWS = [
    ("text-to-image", "FAST", "DDIM", {}, 64, "onnx"),
    ("text-to-image", "ULTRA", "PNDM", {}, 80, "onnx"),  # 1.25x size + refiner
    ("image-to-image", "STANDARD", "DPM_SOLVER_MULTISTEP", {}, 64, "onnx"),
    ("image-to-image", "QUALITY", "EULER_ANCESTRAL", {}, 64, "onnx"),
    ("inpaint", "ULTRA", "EULER", {"crop_padding": 4}, 80, "onnx"),  # inpaint refiner at the ULTRA size
    ("inpaint", "QUALITY", "DDIM", {"width": 128, "height": 128}, 128, "onnx"),
    ("refiner", "STANDARD", "DPM_SOLVER_MULTISTEP", {}, 64, "onnx"),
    ("refiner", "FAST", "UNSPECIFIED", {}, 64, "onnx"),
    ("lora-diffusers", "STANDARD", "EULER_ANCESTRAL", {}, 64, "torch:adapters"),
    ("lora-kohya", "QUALITY", "PNDM", {}, 64, "torch:adapters"),
    ("lora-kohya", "FAST", "EULER", {}, 64, "torch:adapters"),
    ("ip-adapter", "FAST", "DPM_SOLVER_MULTISTEP", {}, 64, "torch:reference_image"),
    ("ip-adapter", "ULTRA", "EULER_ANCESTRAL", {}, 80, "torch:reference_image"),
    ("lora-diffusers", "ULTRA", "DDIM", {"with_reference": True}, 80, "torch:adapters"),
]


@pytest.fixture(scope="module")
def lora_uris(service, tmp_path_factory):
    thread, _, store = service
    folder = thread.runtime.service.servicers[0][1]._generator.manager.repo.fetch("tiny-sdxl")
    tmp = tmp_path_factory.mktemp("matrix-loras")
    return {fmt: store.put(f"matrix/{fmt}.safetensors", _make_lora(folder, tmp / f"{fmt}.safetensors", fmt, 3)
                           .read_bytes(), "application/octet-stream").uri for fmt in ("diffusers", "kohya")}


def _request(task: str, quality: str, sampler: str, extra: dict, lora_uris: dict, prefix: str) -> G.GenerateRequest:
    rng = np.random.default_rng(11)
    fields = dict(model="tiny-sdxl", prompt="a portrait", seed=21, steps=4, return_inline=True, output_prefix=prefix,
                  quality_mode=Q.Value(f"QUALITY_MODE_{quality}"), sampler=S.Value(f"SAMPLER_{sampler}"))
    extra = dict(extra)
    if extra.pop("with_reference", False) or task == "ip-adapter":
        fields["reference_image"] = common_pb2.ImageInput(data=png_bytes(rng.integers(0, 256, (72, 72, 3), np.uint8)))
    if task in ("image-to-image", "inpaint"):
        init = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        fields.update(task=G.Task.Value("TASK_IMAGE_TO_IMAGE" if task == "image-to-image" else "TASK_INPAINT"),
                      init_image=common_pb2.ImageInput(data=png_bytes(init)), strength=0.7)
        if task == "inpaint":
            mask = np.zeros((64, 64, 3), np.uint8)
            mask[16:48, 12:52] = 255
            fields["mask"] = common_pb2.ImageInput(data=png_bytes(mask))
    if task == "refiner":
        fields["refiner"] = True
    if task.startswith("lora-"):
        fields["adapters"] = [G.LoraAdapter(uri=lora_uris[task.removeprefix("lora-")], scale=0.8)]
    fields.update(extra)
    return G.GenerateRequest(**fields)


@pytest.mark.parametrize(("task", "quality", "sampler", "extra", "side", "onnx_path"), ROWS,
                         ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in ROWS])
def test_request_kind_on_both_engines(service, onnx_service, lora_uris, task, quality, sampler, extra, side,
                                      onnx_path):
    images = {}
    for name, (thread, stub, _) in (("torch", service), ("onnxruntime", onnx_service)):
        engine = engine_of(thread)
        before = dict(getattr(engine, "batches", {}))
        resp = stub.Generate(_request(task, quality, sampler, extra, lora_uris, f"matrix/{name}/"))
        (image,) = resp.images
        assert not image.cached
        images[name] = decode_image(image.artifact.data, "image").astype(int)
        if name == "onnxruntime":  # the path that served the batch
            grown = {k: v - before.get(k, 0) for k, v in engine.batches.items() if v != before.get(k, 0)}
            assert grown == {onnx_path: 1}, grown
        params = read_png_metadata(image.artifact.data)["parameters"]
        refined = quality in ("QUALITY", "ULTRA") or task == "refiner"
        assert ("Refiner: tiny-sdxl-refiner" in params) == refined
    assert images["torch"].shape[:2] == (side, side) or task == "inpaint"  # inpaint pastes back into the init image
    diff = np.abs(images["torch"] - images["onnxruntime"])
    if onnx_path == "onnx":
        assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())
    else:
        assert diff.max() == 0
