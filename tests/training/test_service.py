"""TrainingService over gRPC on tiny-sdxl: StartRun -> WatchRun -> GetRun, checkpoints in both
formats that load in the generation pipeline and the generation service and change their output,
CompareRuns naming rank, cancel + resume equal to an uninterrupted run, and bad input rejected while staying SERVING."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from likeness.api.v1 import training_pb2 as pb
from likeness.api.v1 import training_pb2_grpc
from likeness.core.store_local import LocalStore
from likeness.diffusion.lora import load_into_pipeline, read_lora
from likeness.diffusion.pipelines import load_pipeline
from likeness.training.app import create_service
from tests.helpers import ServiceThread, health_status
from tests.training.conftest import write_dataset


def spec(**changes) -> pb.RunSpec:
    # 2 images x 20 epochs = 40 steps of ~20-50 ms: room for a CancelRun to land mid-run
    base = dict(base_model="tiny-sdxl", dataset_uri="datasets/faces", trigger_token="ohwx person", rank=4,
                epochs=20, checkpoint_every_epochs=20, unet_lr=1e-2, seed=3, sample_prompts=["a portrait"],
                sample_seeds=[1], sample_steps=2)
    base.update(changes)
    return pb.RunSpec(**base)


def watch(stub, run_id, on_event=None) -> list:
    events = []
    for e in stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=300):
        events.append(e)
        if on_event:
            on_event(e)
    return events


def generate(pipe) -> np.ndarray:
    return pipe("ohwx person, a portrait", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(7)).images[0]


def assert_generation_service_applies(store_uri: str, ckpt, model_root) -> None:
    from likeness.api.v1 import generation_pb2 as G
    from likeness.api.v1 import generation_pb2_grpc
    from likeness.core.images import decode_image
    from likeness.generation.app import create_service as create_generation
    from likeness.generation.settings import GenerationSettings

    settings = GenerationSettings(store_uri=store_uri, model_repository=str(model_root),
                                  model_cache_dir=str(model_root / ".gen-cache"), metrics_enabled=False, port=0,
                                  generation_keep_warm="tiny-sdxl", generation_cpu_threads=1)
    with ServiceThread(create_generation(settings), settings) as gen, gen.channel() as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)

        def image(prefix, adapters=()):
            resp = stub.Generate(G.GenerateRequest(
                model="tiny-sdxl", prompt="ohwx person, a portrait", seed=5, steps=2, width=64, height=64,
                return_inline=True, output_prefix=prefix, adapters=[G.LoraAdapter(uri=u, scale=1.0) for u in adapters]))
            return decode_image(resp.images[0].artifact.data, "image").astype(int)

        base = image("gen/base/")
        diffusers = image("gen/diffusers/", [ckpt.diffusers_weights.uri])
        kohya = image("gen/kohya/", [ckpt.kohya_weights.uri])
    assert np.abs(diffusers - base).max() > 0  # the trained LoRA changes the service's output
    assert np.abs(diffusers - kohya).max() <= 1  # both formats mean the same adapter


@pytest.fixture
def service(settings):
    store = LocalStore(settings.store_uri.removeprefix("file://"))
    write_dataset(store, "datasets/faces", 2)
    with ServiceThread(create_service(settings), settings) as svc, svc.channel() as channel:
        yield svc, training_pb2_grpc.TrainingServiceStub(channel), store


@pytest.mark.slow
def test_run_lifecycle_checkpoints_compare_and_exact_resume(service, settings, model_root):
    svc, stub, store = service
    started = stub.StartRun(pb.StartRunRequest(spec=spec())).run
    assert started.state in (pb.RUN_STATE_QUEUED, pb.RUN_STATE_RUNNING) and started.total_steps == 40
    events = watch(stub, started.run_id)
    assert events[-1].state == pb.RUN_STATE_SUCCEEDED, events[-1].message
    steps = [e.step for e in events]
    assert steps == sorted(steps) and steps[-1] == 40
    assert any(math.isfinite(e.eta_seconds) and e.eta_seconds >= 0 for e in events)
    assert [e.checkpoint.epoch for e in events if e.HasField("checkpoint")] == [20]  # every 20 epochs

    run = stub.GetRun(pb.GetRunRequest(run_id=started.run_id)).run
    assert [p.step for p in run.loss] == list(range(1, 41)) and all(math.isfinite(p.loss) for p in run.loss)
    assert run.spec.alpha == 4 and run.spec.resolution == 64 and run.image_count == 2
    assert len(run.dataset_digest) == 64 and len(run.captions_digest) == 64
    (ckpt,) = run.checkpoints
    assert ckpt.best and run.best_epoch == 20 and ckpt.step == 40 and math.isfinite(ckpt.loss)
    assert math.isnan(ckpt.clip_score) and math.isnan(ckpt.identity_similarity)  # no services configured
    assert any("LIKENESS_TRAINING_EMBEDDING_ADDRESS is not set" in n for n in run.notes)  # ... and it says so
    assert {"setup", "train", "checkpoint", "sampling"} <= set(run.timings) and run.timings["train"] > 0
    for artifact in (ckpt.diffusers_weights, ckpt.kohya_weights, ckpt.state, ckpt.sample_grid):
        info = store.stat(artifact.uri)
        assert (info.sha256, info.size) == (artifact.sha256, artifact.size_bytes)

    # both formats load in the generation pipeline, change its output, and agree with each other
    pipe = load_pipeline(model_root / "tiny-sdxl", "sdxl")
    base = generate(pipe)
    outputs = {}
    for name, artifact in (("diffusers", ckpt.diffusers_weights), ("kohya", ckpt.kohya_weights)):
        path = store.root / store.key_of(artifact.uri)
        lora = read_lora(path)
        assert (lora.format, lora.rank, lora.metadata["ss_network_dim"]) == (name, 4, "4")
        load_into_pipeline(pipe, lora, name)
        pipe.set_adapters([name], [1.0])
        outputs[name] = generate(pipe)
        pipe.delete_adapters(name)
    assert np.abs(outputs["diffusers"] - base).max() > 1e-4
    assert np.allclose(outputs["diffusers"], outputs["kohya"], atol=1e-5)
    # ... and in the generation service itself, by URI, as the orchestrator will use them
    assert_generation_service_applies(settings.store_uri, ckpt, model_root)

    # same data and captions, only the rank differs -> rank is THE difference
    other = stub.StartRun(pb.StartRunRequest(spec=spec(rank=8))).run
    assert watch(stub, other.run_id)[-1].state == pb.RUN_STATE_SUCCEEDED
    table = stub.CompareRuns(pb.CompareRunsRequest(run_ids=[started.run_id, other.run_id]))
    assert list(table.differing_settings) == ["spec.rank"]
    assert table.rows[0].field == "spec.rank" and list(table.rows[0].values) == ["4", "8"]
    rows = {r.field: r for r in table.rows}
    assert not rows["captions_digest"].differs and rows["final.diffusers_weights.size_bytes"].differs

    # cancel mid-run, then resume in a new run: same final weights as the uninterrupted run
    cut = stub.StartRun(pb.StartRunRequest(spec=spec())).run

    sent = []

    def cancel_at_first_step(e):
        if e.step >= 1 and e.state == pb.RUN_STATE_RUNNING and not sent:
            sent.append(stub.CancelRun(pb.CancelRunRequest(run_id=cut.run_id)))

    assert watch(stub, cut.run_id, cancel_at_first_step)[-1].state == pb.RUN_STATE_CANCELLED
    cut_run = stub.GetRun(pb.GetRunRequest(run_id=cut.run_id)).run
    assert 1 <= cut_run.step < 40 and not cut_run.checkpoints
    resumed = stub.StartRun(pb.StartRunRequest(spec=spec(), resume_from_run_id=cut.run_id)).run
    assert watch(stub, resumed.run_id)[-1].state == pb.RUN_STATE_SUCCEEDED
    final = stub.GetRun(pb.GetRunRequest(run_id=resumed.run_id)).run
    assert [p.step for p in final.loss] == list(range(cut_run.step + 1, 41))
    a = load_file(str(store.root / store.key_of(ckpt.diffusers_weights.uri)))
    b = load_file(str(store.root / store.key_of(final.checkpoints[0].diffusers_weights.uri)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [p.loss for p in final.loss] == [p.loss for p in run.loss][cut_run.step:]

    code, details = _code(lambda: stub.StartRun(pb.StartRunRequest(spec=spec(), resume_from_run_id=started.run_id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "nothing to resume" in details
    code, details = _code(lambda: stub.StartRun(pb.StartRunRequest(spec=spec(rank=8), resume_from_run_id=cut.run_id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "these differ: spec.rank, spec.alpha" in details

    listed = stub.ListRuns(pb.ListRunsRequest(page_size=10)).runs
    assert [r.run_id for r in listed] == [resumed.run_id, cut.run_id, other.run_id, started.run_id]
    assert health_status(svc.port) == "SERVING"


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_bad_input_is_rejected_before_training_and_service_stays_serving(service):
    svc, stub, store = service
    write_dataset(store, "datasets/uncaptioned", 2, captions=False)
    write_dataset(store, "datasets/corrupt", 2)
    png = store.get("datasets/corrupt/img_001.png")
    store.put("datasets/corrupt/img_001.png", png[:100])
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases = [
        (spec(rank=0), "spec.rank: 0 is outside [1, 256]"),
        (spec(unet_lr=-1e-4), "spec.unet_lr: learning rate -0.0001 must be > 0"),
        (spec(text_encoder_lr=-1), "spec.text_encoder_lr"),
        (spec(base_model="sdxl-base-1.0"), "spec.base_model: unknown base model 'sdxl-base-1.0'"),
        (spec(dataset_uri="datasets/empty"), "spec.dataset_uri: no images"),
        (spec(dataset_uri="datasets/uncaptioned"), "2 of 2 images have no same-name .txt caption"),
        (spec(dataset_uri="../etc"), "spec.dataset_uri"),
        (spec(resolution=100), "spec.resolution: 100 is not a multiple of 8"),
    ]
    for bad, words in cases:
        code, details = _code(lambda b=bad: stub.StartRun(pb.StartRunRequest(spec=b)))
        assert code == invalid and words in details, (words, details)
    assert list(stub.ListRuns(pb.ListRunsRequest()).runs) == []  # nothing was queued

    code, details = _code(lambda: stub.GetRun(pb.GetRunRequest(run_id="missing")))
    assert code == grpc.StatusCode.NOT_FOUND and "missing" in details
    code, details = _code(lambda: list(stub.WatchRun(pb.WatchRunRequest(run_id="missing"), timeout=30)))
    assert code == grpc.StatusCode.NOT_FOUND and "missing" in details
    code, _ = _code(lambda: stub.GetRun(pb.GetRunRequest(run_id="")))
    assert code == invalid
    code, _ = _code(lambda: stub.CompareRuns(pb.CompareRunsRequest(run_ids=["a"])))
    assert code == invalid
    code, _ = _code(lambda: stub.ListRuns(pb.ListRunsRequest(page_size=5000)))
    assert code == invalid

    # a corrupt image is skipped and recorded in the run (and the trigger-only policy is recorded)
    run = stub.StartRun(pb.StartRunRequest(spec=spec(dataset_uri="datasets/corrupt", epochs=1))).run
    assert run.image_count == 1 and len(run.skipped) == 1
    assert run.skipped[0].uri.endswith("img_001.png") and run.skipped[0].reason.startswith("corrupt image")
    stub.CancelRun(pb.CancelRunRequest(run_id=run.run_id))
    watch(stub, run.run_id)
    code, details = _code(lambda: stub.CancelRun(pb.CancelRunRequest(run_id=run.run_id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "already ended" in details
    ok = stub.StartRun(pb.StartRunRequest(spec=spec(
        dataset_uri="datasets/uncaptioned", epochs=1,
        missing_caption_policy=pb.MISSING_CAPTION_POLICY_TRIGGER_ONLY))).run
    stub.CancelRun(pb.CancelRunRequest(run_id=ok.run_id))
    assert ok.image_count == 2 and not ok.skipped
    assert health_status(svc.port) == "SERVING"
