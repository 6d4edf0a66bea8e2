"""LoRA adapters through the service: load once, switch per request, scale 0 = base pixels,
several at once, memory budget eviction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from likeness.api.v1 import generation_pb2 as G
from likeness.core.images import decode_image
from likeness.diffusion.lora import peft_state_dict, save_lora
from likeness.generation.adapters import AdapterCache


def _make_lora(folder, path, fmt: str, seed: int):
    """A LoRA with trained-like (non-zero) weights for the tiny-sdxl UNet."""
    from peft import LoraConfig

    from likeness.diffusion.pipelines import load_pipeline

    pipe = load_pipeline(folder, "sdxl")
    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for name, param in pipe.unet.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    return save_lora(path, peft_state_dict(pipe.unet), fmt=fmt, unet_config=dict(pipe.unet.config))


@pytest.fixture(scope="module")
def adapters(service, tmp_path_factory):
    thread, _, store = service
    generator = thread.runtime.service.servicers[0][1]._generator
    folder = generator.manager.repo.fetch("tiny-sdxl")
    tmp = tmp_path_factory.mktemp("loras")
    uris = {}
    for name, fmt, seed in (("a", "diffusers", 1), ("b", "kohya", 2)):
        path = _make_lora(folder, tmp / f"{name}.safetensors", fmt, seed)
        uris[name] = store.put(f"adapters/{name}.safetensors", path.read_bytes(), "application/octet-stream").uri
    return uris, generator


def _gen(stub, prefix, adapters=()):
    resp = stub.Generate(G.GenerateRequest(model="tiny-sdxl", prompt="p", seed=9, steps=2, width=64, height=64,
                                           return_inline=True, output_prefix=prefix,
                                           adapters=[G.LoraAdapter(uri=u, scale=s) for u, s in adapters]))
    return decode_image(resp.images[0].artifact.data, "image")


def test_load_switch_and_scale_zero(service, adapters):
    _, stub, store = service
    uris, generator = adapters
    base = _gen(stub, "lora/base/")
    a = _gen(stub, "lora/a/", [(uris["a"], 1.0)])
    b = _gen(stub, "lora/b/", [(uris["b"], 1.0)])
    both = _gen(stub, "lora/ab/", [(uris["a"], 0.5), (uris["b"], 0.5)])
    assert not np.array_equal(a, base) and not np.array_equal(b, base) and not np.array_equal(a, b)
    assert not np.array_equal(both, a)
    assert np.array_equal(_gen(stub, "lora/a0/", [(uris["a"], 0.0)]), base)  # scale 0: base, exactly
    assert np.array_equal(_gen(stub, "lora/base2/"), base)  # adapters switched off: base, exactly
    import grpc

    copy = store.put("adapters/a-copy.safetensors", store.get(uris["a"]), "application/octet-stream").uri
    with pytest.raises(grpc.RpcError) as err:
        _gen(stub, "lora/dup/", [(uris["a"], 1.0), (copy, 0.5)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "adapters[1].uri" in err.value.details()
    loads = generator.manager.loaded()["tiny-sdxl"].adapters.loads
    assert np.array_equal(_gen(stub, "lora/a-again/", [(uris["a"], 1.0)]), a)  # switched back, same pixels
    assert generator.manager.loaded()["tiny-sdxl"].adapters.loads == loads  # ... without loading it again


class FakePipe:
    def __init__(self):
        self.deleted, self.active, self.enabled = [], None, True

    def delete_adapters(self, name):
        self.deleted.append(name)

    def set_adapters(self, names, adapter_weights):
        self.active = list(zip(names, adapter_weights, strict=True))

    def disable_lora(self):
        self.enabled = False

    def enable_lora(self):
        self.enabled = True


def test_budget_evicts_least_recently_used(monkeypatch):
    from likeness.diffusion.lora import LoraFile
    from likeness.generation import adapters as mod

    monkeypatch.setattr(mod, "load_into_pipeline", lambda pipe, lora, name, field: None)
    files = {n: LoraFile({}, "diffusers", 4, 100, {}, ("unet",)) for n in ("x", "y", "z")}
    cache, pipe = AdapterCache(budget_bytes=250), FakePipe()
    cache.activate(pipe, (("x", 1.0),), files)
    cache.activate(pipe, (("y", 1.0),), files)
    cache.activate(pipe, (("x", 0.5),), files)  # x is now the most recent
    cache.activate(pipe, (("z", 1.0),), files)  # over budget: y goes
    assert pipe.deleted == ["y"] and cache.loaded == ["x", "z"] and pipe.active == [("z", 1.0)]
    cache.activate(pipe, (("z", 0.0),), files)
    assert not pipe.enabled  # every scale 0: LoRA off entirely


def test_sd15_lora_runs_on_sd15_and_fails_alone_on_sdxl(service, tmp_path):
    """An SD 1.5 LoRA works on tiny-sd15; sent to tiny-sdxl at the same time as a good request, it
    fails in the worker with INVALID_ARGUMENT while the good request succeeds."""
    import threading

    import grpc

    from likeness.diffusion.pipelines import load_pipeline
    from tests.helpers import health_status

    thread, stub, store = service
    generator = thread.runtime.service.servicers[0][1]._generator
    folder = generator.manager.repo.fetch("tiny-sd15")
    pipe = load_pipeline(folder, "sd15")
    from peft import LoraConfig

    torch.manual_seed(3)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_v"]))
    for name, param in pipe.unet.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    path = save_lora(tmp_path / "sd15.safetensors", peft_state_dict(pipe.unet), fmt="kohya", family="sd15")
    uri = store.put("adapters/sd15.safetensors", path.read_bytes(), "application/octet-stream").uri

    def sd15(prefix, adapters=()):
        resp = stub.Generate(G.GenerateRequest(model="tiny-sd15", prompt="p", seed=4, steps=2, width=64, height=64,
                                               return_inline=True, output_prefix=prefix,
                                               adapters=[G.LoraAdapter(uri=u, scale=s) for u, s in adapters]))
        return decode_image(resp.images[0].artifact.data, "image")

    assert not np.array_equal(sd15("sd15lora/on/", [(uri, 1.0)]), sd15("sd15lora/off/"))

    outcome = {}

    def call(name, adapters):
        try:
            outcome[name] = _gen(stub, f"mixed/{name}/", adapters)
        except grpc.RpcError as exc:
            outcome[name] = exc

    calls = [threading.Thread(target=call, args=("good", ())), threading.Thread(target=call, args=("bad", [(uri, 1.0)]))]
    for t in calls:
        t.start()
    for t in calls:
        t.join()
    assert isinstance(outcome["good"], np.ndarray)
    assert outcome["bad"].code() == grpc.StatusCode.INVALID_ARGUMENT and "does not fit" in outcome["bad"].details()
    assert health_status(thread.port) == "SERVING"
    assert np.array_equal(_gen(stub, "mixed/after/"), outcome["good"])  # the failed load left the model clean


def test_png_parameters_parse_in_sd_parsers_with_a1111_hashes(service, adapters):
    """Every field of the `parameters` chunk read back by sd-parsers (an independent A1111 reader),
    and the hashes recomputed here the way A1111 computes them."""
    import hashlib
    import io

    from PIL import Image
    from sd_parsers import ParserManager
    from sd_parsers.data import Generators

    from likeness.core.pngmeta import parse_parameters, read_png_metadata

    _, stub, store = service
    uris, _ = adapters
    resp = stub.Generate(G.GenerateRequest(model="tiny-sdxl", prompt="a portrait, soft light", negative_prompt="blurry",
                                           seed=77, steps=3, guidance_scale=6.5, width=64, height=64,
                                           return_inline=True, output_prefix="lora/meta/",
                                           adapters=[G.LoraAdapter(uri=uris["a"], scale=0.7),
                                                     G.LoraAdapter(uri=uris["b"], scale=0.3)]))
    png = resp.images[0].artifact.data
    info = ParserManager().parse(Image.open(io.BytesIO(png)))
    assert info is not None and info.generator == Generators.AUTOMATIC1111
    sampler = info.samplers[0]
    assert [p.value for p in sampler.prompts] == ["a portrait, soft light"]
    assert [p.value for p in sampler.negative_prompts] == ["blurry"]
    assert sampler.parameters == {"steps": "3", "cfg_scale": "6.5", "seed": "77"}
    assert sampler.name  # the scheduler's A1111 label
    # tiny-sdxl is a diffusers folder: A1111 cannot hash it, so only its name is given
    assert sampler.model.name == "tiny-sdxl" and sampler.model.hash is None
    assert info.metadata["Size"] == "64x64"
    # sd-parsers 0.6 splits the settings line on every ',' and ':' and so drops A1111's quoted
    # `Lora hashes: "a: ..., b: ..."`; its raw text is read here with A1111's own grammar
    fields = parse_parameters(info.raw_parameters["parameters"])
    assert "Model hash" not in fields

    def a1111_lora_hash(data: bytes) -> str:  # A1111's addnet hash: sha256 after the header, 12 hex
        n = int.from_bytes(data[:8], "little")
        return hashlib.sha256(data[8 + n:]).hexdigest()[:12]

    expected = ", ".join(f"{name}: {a1111_lora_hash(store.get(uris[name]))}" for name in ("a", "b"))
    assert fields["Lora hashes"] == expected
    assert read_png_metadata(png)["parameters"] == info.raw_parameters["parameters"]


def test_single_file_checkpoint_gets_a1111_model_hash(tmp_path):
    import hashlib
    import io

    from PIL import Image
    from sd_parsers import ParserManager

    from likeness.core.pngmeta import a1111_model_hash, add_png_metadata, format_parameters

    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      weights")
    full = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert a1111_model_hash(["model.safetensors"], {"model.safetensors": full}) == full[:10]
    folder = {"unet/diffusion_pytorch_model.safetensors": full, "model_index.json": full}
    assert a1111_model_hash(list(folder), folder) == ""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    text = format_parameters("p", "", 4, "Euler", 7.0, 1, 8, 8, "one-file", full[:10])
    model = ParserManager().parse(Image.open(io.BytesIO(add_png_metadata(buf.getvalue(), text)))).samplers[0].model
    assert (model.name, model.hash) == ("one-file", full[:10])
