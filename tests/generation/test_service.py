"""The service over gRPC on tiny-sdxl (its images are noise: these tests check mechanics and
determinism, never image content)."""

from __future__ import annotations

import hashlib
import io
import threading

import grpc
import numpy as np
import pytest
from PIL import Image

from likeness.api.v1 import common_pb2, generation_pb2
from likeness.core.images import decode_image
from likeness.core.pngmeta import read_png_metadata
from tests.helpers import health_status

G = generation_pb2


def req(**fields) -> G.GenerateRequest:
    base = dict(model="tiny-sdxl", prompt="a portrait", seed=7, steps=2, width=64, height=64, return_inline=True)
    base.update(fields)
    return G.GenerateRequest(**base)


def pixels(image: G.GeneratedImage) -> np.ndarray:
    return decode_image(image.artifact.data, "image")


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("sampler", [G.SAMPLER_UNSPECIFIED, G.SAMPLER_DDIM, G.SAMPLER_PNDM,
                                     G.SAMPLER_DPM_SOLVER_MULTISTEP, G.SAMPLER_EULER, G.SAMPLER_EULER_ANCESTRAL,
                                     G.SAMPLER_LCM])
def test_every_sampler_runs(service, sampler):
    _, stub, _ = service
    resp = stub.Generate(req(sampler=sampler, output_prefix=f"samplers/{sampler}/"))
    (image,) = resp.images
    assert pixels(image).shape == (64, 64, 3) and not image.cached
    params = read_png_metadata(image.artifact.data)["parameters"]
    assert "Seed: 7" in params and "Size: 64x64" in params and "Model: tiny-sdxl" in params
    assert image.parameters == params  # the response carries what the PNG says ran
    assert resp.timings.denoising_seconds > 0 and resp.model_digest


def test_same_request_gives_identical_bytes_and_then_is_cached(service):
    _, stub, _ = service
    a = stub.Generate(req(seed=11, output_prefix="det/a/")).images[0]
    b = stub.Generate(req(seed=11, output_prefix="det/b/")).images[0]
    assert a.artifact.sha256 == b.artifact.sha256 and a.artifact.data == b.artifact.data
    assert a.work_id == b.work_id
    again = stub.Generate(req(seed=11, output_prefix="det/a/")).images[0]
    assert again.cached and again.artifact.sha256 == a.artifact.sha256
    assert again.parameters == a.parameters == read_png_metadata(a.artifact.data)["parameters"]
    other = stub.Generate(req(seed=12, output_prefix="det/a/")).images[0]
    assert other.artifact.sha256 != a.artifact.sha256


def test_batch_image_equals_same_seed_alone(service):
    _, stub, _ = service
    batch = stub.Generate(req(seed=100, count=3, output_prefix="batch/", sampler=G.SAMPLER_EULER_ANCESTRAL))
    assert [i.seed for i in batch.images] == [100, 101, 102] and batch.timings.batch_size == 3
    for image in batch.images:
        alone = stub.Generate(req(seed=image.seed, output_prefix=f"alone/{image.seed}/",
                                  sampler=G.SAMPLER_EULER_ANCESTRAL)).images[0]
        assert alone.work_id == image.work_id
        # documented tolerance: at most 1/255 per channel (float sums differ by batch size); on
        # this CPU build it has been exact
        diff = np.abs(pixels(alone).astype(int) - pixels(image).astype(int)).max()
        assert diff <= 1, diff


def test_concurrent_requests_are_merged_and_keep_their_seeds(service):
    _, stub, _ = service
    results: dict[int, G.GenerateResponse] = {}

    def call(seed):
        results[seed] = stub.Generate(req(seed=seed, prompt=f"prompt {seed}", output_prefix="concurrent/"))

    from likeness.core import metrics

    def observed_batches():
        return metrics.BATCH_SIZE.labels("tiny-sdxl")._sum.get()

    before = observed_batches()
    threads = [threading.Thread(target=call, args=(s,)) for s in (201, 202, 203)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(r.timings.batch_size for r in results.values()) >= 2  # merged into one pipeline call
    assert observed_batches() - before == 3  # the batch-size histogram saw all three images
    for seed, resp in results.items():
        alone = stub.Generate(req(seed=seed, prompt=f"prompt {seed}", output_prefix="concurrent-alone/")).images[0]
        assert np.abs(pixels(alone).astype(int) - pixels(resp.images[0]).astype(int)).max() <= 1


def test_image_to_image_and_inpaint_keep_pixels_outside_the_mask(service):
    _, stub, _ = service
    rng = np.random.default_rng(1)
    init = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    mask = np.zeros((80, 96), np.uint8)
    mask[24:48, 30:70] = 255
    init_pb = common_pb2.ImageInput(data=png_bytes(init))
    mask_pb = common_pb2.ImageInput(data=png_bytes(np.stack([mask] * 3, axis=2)))

    i2i = stub.Generate(req(task=G.TASK_IMAGE_TO_IMAGE, init_image=init_pb, width=0, height=0, strength=0.6))
    assert pixels(i2i.images[0]).shape == (80, 96, 3)
    for padding, refiner in ((0, False), (6, False), (6, True)):
        size = {"width": 64, "height": 64} if padding else {"width": 0, "height": 0}
        out = pixels(stub.Generate(req(task=G.TASK_INPAINT, init_image=init_pb, mask=mask_pb, crop_padding=padding,
                                       refiner=refiner, steps=4, **size)).images[0])
        inside = mask > 127
        assert out.shape == init.shape
        assert np.array_equal(out[~inside], init[~inside])  # untouched outside the mask
        assert (out[inside] != init[inside]).mean() > 0.5  # repainted inside


def test_region_paste_returns_the_whole_denoised_region_for_the_caller_to_blend(service):
    _, stub, _ = service
    rng = np.random.default_rng(2)
    init = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    mask = np.zeros((80, 96), np.uint8)
    mask[30:40, 40:56] = 255
    common = dict(task=G.TASK_INPAINT, init_image=common_pb2.ImageInput(data=png_bytes(init)),
                  mask=common_pb2.ImageInput(data=png_bytes(np.stack([mask] * 3, axis=2))), crop_padding=8, steps=2)
    hard = stub.Generate(req(**common)).images[0]
    region = stub.Generate(req(**common, paste=G.PASTE_MODE_REGION)).images[0]
    assert hard.work_id != region.work_id  # different outputs, different units of work
    out = pixels(region)
    box = np.zeros((80, 96), bool)
    box[30 - 8:40 + 8, 40 - 8:56 + 8] = True
    assert np.array_equal(out[~box], init[~box])  # outside the region: the init image
    ring = box & (mask == 0)
    assert (out[ring] != init[ring]).mean() > 0.5  # around the mask: generated pixels, not pasted through it
    inside = mask > 127
    assert np.array_equal(out[inside], pixels(hard)[inside])  # the same denoising inside the mask
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(req(paste=G.PASTE_MODE_REGION))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "paste" in err.value.details()


def test_refiner_and_noise_injection(service):
    _, stub, _ = service
    plain = stub.Generate(req(steps=4, seed=3, output_prefix="ni/")).images[0]
    refined = stub.Generate(req(steps=4, seed=3, refiner=True, refiner_fraction=0.5, output_prefix="ni/")).images[0]
    noisy = stub.Generate(req(steps=4, seed=3, noise_injection=0.3, output_prefix="ni/")).images[0]
    assert len({plain.artifact.sha256, refined.artifact.sha256, noisy.artifact.sha256}) == 3
    params = read_png_metadata(refined.artifact.data)["parameters"]
    assert "Refiner: tiny-sdxl-refiner" in params


def test_sd15_model_runs(service):
    _, stub, _ = service
    resp = stub.Generate(req(model="tiny-sd15", output_prefix="sd15/"))
    assert pixels(resp.images[0]).shape == (64, 64, 3)
    assert "CFG scale: 7.5" in read_png_metadata(resp.images[0].artifact.data)["parameters"]  # SD 1.5 default


def test_reference_image_guidance_through_ip_adapter(service):
    _, stub, _ = service
    rng = np.random.default_rng(5)
    refs = [common_pb2.ImageInput(data=png_bytes(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))) for _ in range(2)]
    base = pixels(stub.Generate(req(seed=61, output_prefix="ipa/base/")).images[0])
    guided = [pixels(stub.Generate(req(seed=61, reference_image=r, output_prefix="ipa/g/")).images[0]) for r in refs]
    assert not np.array_equal(guided[0], base) and not np.array_equal(guided[0], guided[1])
    zero = stub.Generate(req(seed=61, reference_image=refs[0], reference_scale=0.0, output_prefix="ipa/z/")).images[0]
    assert np.array_equal(pixels(zero), base)  # scale 0: the reference has no effect
    assert "IP-Adapter scale: 0" in read_png_metadata(zero.artifact.data)["parameters"]
    # the next request without a reference runs on the plain UNet again (IP-Adapter unloaded)
    assert np.array_equal(pixels(stub.Generate(req(seed=61, output_prefix="ipa/base2/")).images[0]), base)


def test_stream_reports_every_step(service):
    _, stub, _ = service
    events = list(stub.GenerateStream(G.GenerateStreamRequest(request=req(steps=3, seed=41, output_prefix="stream/"))))
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    assert [(p.stage, p.done, p.total) for p in progress] == [("denoise", 1, 3), ("denoise", 2, 3), ("denoise", 3, 3)]
    assert events[-1].WhichOneof("event") == "result" and len(events[-1].result.images) == 1


def test_long_prompt_is_truncated_with_a_warning(service):
    _, stub, _ = service
    resp = stub.Generate(req(prompt="word " * 100, output_prefix="long/"))
    assert any("over the limit of 77" in w for w in resp.warnings)


def test_list_models(service):
    _, stub, _ = service
    resp = stub.ListModels(G.ListModelsRequest())
    models = {m.name: m for m in resp.models}
    assert {"tiny-sdxl", "tiny-sdxl-refiner", "tiny-sd15"} <= set(models)
    assert models["tiny-sdxl"].loaded and models["tiny-sdxl"].memory_bytes > 0 and models["tiny-sdxl"].kind == "sdxl"
    assert resp.engine == "torch"


def _code(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


@pytest.mark.parametrize("fields, code, words", [
    ({"steps": 0, "quality_mode": 99}, grpc.StatusCode.INVALID_ARGUMENT, "quality_mode"),
    ({"steps": 201}, grpc.StatusCode.INVALID_ARGUMENT, "steps: 201 is outside [1, 200]"),
    ({"guidance_scale": -1.0}, grpc.StatusCode.INVALID_ARGUMENT, "guidance_scale"),
    ({"width": 100}, grpc.StatusCode.INVALID_ARGUMENT, "width: 100 is not a multiple of 8"),
    ({"width": 4096}, grpc.StatusCode.INVALID_ARGUMENT, "width"),
    ({"sampler": 42}, grpc.StatusCode.INVALID_ARGUMENT, "sampler: unknown enum value 42"),
    ({"model": "no-such-model"}, grpc.StatusCode.NOT_FOUND, "no-such-model"),
    ({"model": "tiny-sdxl-refiner"}, grpc.StatusCode.INVALID_ARGUMENT, "kind 'sdxl-refiner'"),
    ({"adapters": [generation_pb2.LoraAdapter(uri="file:///nope/none.safetensors", scale=1)]},
     None, "adapters[0].uri"),
    ({"task": G.TASK_INPAINT, "init_image": common_pb2.ImageInput(data=png_bytes(np.zeros((64, 64, 3), np.uint8))),
      "mask": common_pb2.ImageInput(data=png_bytes(np.full((32, 32, 3), 255, np.uint8)))},
     grpc.StatusCode.INVALID_ARGUMENT, "mask: is 32x32, but init_image is 64x64"),
    ({"model": "tiny-sd15", "reference_image": common_pb2.ImageInput(data=png_bytes(np.zeros((64, 64, 3), np.uint8)))},
     grpc.StatusCode.FAILED_PRECONDITION, "needs IP-Adapter weights: model 'ip-adapter-sd15'"),
    ({"reference_image": common_pb2.ImageInput(data=png_bytes(np.zeros((64, 64, 3), np.uint8))),
      "reference_scale": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "reference_scale"),
])
def test_bad_requests_get_clear_errors_and_service_stays_serving(service, fields, code, words):
    thread, stub, _ = service
    got, details = _code(lambda: stub.Generate(req(**fields)))
    if code is not None:
        assert got == code, details
    else:
        assert got in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), details
    assert words in details
    assert health_status(thread.port) == "SERVING"


def test_corrupt_adapter_is_invalid_argument(service):
    thread, stub, store = service
    stored = store.put("adapters/corrupt.safetensors", b"\x20\x00\x00\x00\x00\x00\x00\x00{broken",
                       "application/octet-stream")
    got, details = _code(lambda: stub.Generate(req(adapters=[G.LoraAdapter(uri=stored.uri, scale=1.0)])))
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "adapters[0].uri: not a readable" in details
    assert health_status(thread.port) == "SERVING"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_full_queue_answers_resource_exhausted_with_retry_hint(service):
    """Capacity is 12 images: a long batch occupies the worker, 12 more wait, the next is refused.
    Waits on the batcher's depth, not on sleeps, so a loaded machine cannot reorder the steps."""
    from tests.helpers import wait_for

    thread, stub, _ = service
    batcher = thread.runtime.service.servicers[0][1]._generator.batcher
    busy = stub.Generate.future(req(steps=60, count=4, seed=900, output_prefix="full/busy/"))
    waiting = []
    try:
        wait_for(lambda: batcher.depth == 0 and not busy.done(), timeout=30, what="the busy batch to leave the queue")
        import time

        time.sleep(0.2)  # the worker has taken the busy batch (max wait elapsed)
        waiting = [stub.Generate.future(req(steps=1, count=4, seed=910 + 10 * i, width=72, output_prefix="full/w/"))
                   for i in range(3)]
        wait_for(lambda: batcher.depth == 12, timeout=30, what="12 images waiting")
        with pytest.raises(grpc.RpcError) as err:
            stub.Generate(req(steps=1, seed=990, output_prefix="full/x/"))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in err.value.details()
        hint = dict(err.value.trailing_metadata() or ())
        assert int(hint["grpc-retry-pushback-ms"]) > 0  # gRPC's own back-off hint, integer ms
    finally:
        busy.result()
        for f in waiting:
            f.result()


def test_cancelled_stream_leaves_the_queue(service):
    import time

    from tests.helpers import wait_for

    thread, stub, _ = service
    batcher = thread.runtime.service.servicers[0][1]._generator.batcher
    busy = stub.Generate.future(req(steps=60, count=4, seed=700, output_prefix="cancel/busy/"))
    try:
        time.sleep(0.5)
        stream = stub.GenerateStream(G.GenerateStreamRequest(request=req(seed=701, width=72, output_prefix="cancel/")))
        wait_for(lambda: batcher.depth == 1, timeout=10, what="the streamed request to queue")
        stream.cancel()
        wait_for(lambda: batcher.depth == 0, timeout=10, what="the cancelled request to leave the queue")
    finally:
        busy.result()
    assert health_status(thread.port) == "SERVING"
