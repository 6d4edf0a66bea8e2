"""The five job kinds through the production shape (conftest.py): values-gpu.yaml's environment on
this CPU, S3 and PostgreSQL, stand-in models under the production names. The stand-ins' outputs are
meaningless (random weights, a planted face), so these tests assert that each job runs through
every production code path (onnxruntime engine in float16, open_clip in float16, CodeFormer,
InsightFace + ArcFace) and keeps its promises on mechanics, not on image content."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from likeness.api.v1 import common_pb2, generation_pb2, training_pb2
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.core.images import encode_png
from tests.photos import group_photo, skimage_photo, tom_hanks
from tests.production.conftest import VALUES_GPU, overridden_settings
from tools.stack import SERVICES, production_overrides, service_environments

pytestmark = pytest.mark.slow
MODEL = "sdxl-base"  # the stand-in registered under the production name


def manifest(store, job) -> dict:
    return json.loads(store.get(job.manifest.uri))


def put_png(store, key: str, rgb: np.ndarray) -> str:
    return store.put(key, encode_png(rgb), "image/png").uri


def test_the_rendered_environment_is_values_gpu_with_only_the_device_changed(production_stack):
    state, envs = production_stack
    rendered = service_environments(list(SERVICES), state["ports"], state["database_url"], Path(state["dir"]),
                                    [str(VALUES_GPU)])
    changed = overridden_settings(Path(envs["generation"]["LIKENESS_GENERATION_ENGINE_CACHE_DIR"]),
                                  envs["generation"]["LIKENESS_TRACING_ENDPOINT"])
    for name, env in envs.items():  # beyond production_overrides, only the settings conftest.py declares
        expected = production_overrides(rendered[name])
        differing = {k for k in {*env, *expected} if env.get(k) != expected.get(k)}
        assert differing <= {*changed["*"], *changed.get(name, {})}, (name, differing)
    g = envs["generation"]
    assert (g["LIKENESS_GENERATION_ENGINE"], g["LIKENESS_GENERATION_DTYPE"]) == ("onnxruntime", "float16")
    assert g["LIKENESS_GENERATION_DEVICE"] == "cpu"
    assert g["LIKENESS_GENERATION_ONNX_PROVIDERS"] == "CPUExecutionProvider"
    assert g["LIKENESS_GENERATION_KEEP_WARM"] == MODEL and g["LIKENESS_GENERATION_BUILD_TINY_MODELS"] == "false"
    assert (envs["embedding"]["LIKENESS_EMBEDDING_ENCODER"], envs["embedding"]["LIKENESS_EMBEDDING_DTYPE"]) == (
        "open_clip", "float16")
    assert envs["restoration"]["LIKENESS_RESTORATION_BACKEND"] == "codeformer"
    assert envs["detection"]["LIKENESS_DETECTION_BACKEND"] == "insightface"
    assert envs["detection"]["LIKENESS_DETECTION_PROVIDERS"] == "CPUExecutionProvider"
    assert envs["training"]["LIKENESS_TRAINING_EXECUTOR"] == "kubernetes_job"
    for env in envs.values():
        assert env["LIKENESS_STORE_URI"].startswith("s3://")
        assert env.get("LIKENESS_ORCHESTRATOR_DATABASE_URL", "postgresql").startswith("postgresql")


def rpc_count(production_stack, service: str, method: str) -> float:
    """Calls of `method` the service's /metrics has counted (all status codes)."""
    state, _ = production_stack
    with urllib.request.urlopen(f"http://127.0.0.1:{state['ports'][service] + 1000}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("likeness_rpc_duration_seconds_count") and f'method="{method}"' in line)


def job_specs(store) -> dict[str, o.JobSpec]:
    """The inputs uploaded and one spec per job kind but training (which needs the curated set)."""
    for seed, img in {"1": skimage_photo("astronaut"), "2": tom_hanks()}.items():
        for i in range(3):
            put_png(store, f"prod-candidates/{seed}/{'original' if i == 0 else 'scenario'}/v{i}.png",
                    np.ascontiguousarray(img[:, ::-1] if i == 2 else img))
    put_png(store, "prod-candidates/3/original/group.png", group_photo())
    for i, img in enumerate((skimage_photo("astronaut"), tom_hanks(), skimage_photo("camera"))):
        put_png(store, f"prod-reference/r{i}.png", img)
    astronaut = put_png(store, "prod-inputs/astronaut.png", skimage_photo("astronaut"))
    diversity = [o.DiversitySetting(name="base", seed_start=0, count=2, steps=2),
                 o.DiversitySetting(name="euler-a", seed_start=100, count=2, steps=2,
                                    sampler=generation_pb2.SAMPLER_EULER_ANCESTRAL, noise_injection=0.3)]
    # the candidates are exact and mirrored copies of one photo per person (duplicate removal, which
    # would keep one of each, is tested in tests/orchestrator/test_duplicates.py)
    return {  # in submission order: the longest (CodeFormer on this CPU) starts early
        "curate": o.JobSpec(curate=o.CurateSpec(
            import_source=o.ImportSource(uri=store.uri("prod-candidates/")), target_count=3,
            trigger_token="ohwx person", output_prefix="prod-datasets/curate/", keep_duplicates=True)),
        "open_eyes": o.JobSpec(open_eyes=o.OpenEyesSpec(
            image=common_pb2.ImageInput(uri=astronaut), model=MODEL, variations=1, steps=2, seed=5, restore=True)),
        "storyboard": o.JobSpec(storyboard=o.StoryboardSpec(
            model=MODEL, character="a woman with red hair", frame_prompts=["walking"], seed=3, retry_budget=1,
            width=64, height=64, steps=2)),
        "diversity": o.JobSpec(diversity=o.DiversitySpec(
            model=MODEL, prompt="portrait", width=64, height=64, reference_uri=store.uri("prod-reference/"),
            settings=diversity, nearest_k=1)),
    }


@pytest.fixture(scope="module")
def submitted(production_stack, production_client, production_store) -> dict:
    """Every job submitted at once, as the users of one deployment would: the orchestrator runs
    `max_running_jobs` (2) at a time and queues the rest, so one job's model work overlaps another's
    (and the stack is exercised with jobs in flight together). Job ids by kind, plus the Restore
    calls counted before any job ran."""
    specs = job_specs(production_store)
    restores = rpc_count(production_stack, "restoration", "Restore")
    return {"restores": restores, **{kind: production_client.submit(spec).job_id for kind, spec in specs.items()}}


@pytest.fixture(scope="module")
def curated(production_client, submitted) -> o.Job:
    return production_client.follow(submitted["curate"], quiet=True)


def test_curate(production_store, curated):
    job = curated
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    m = manifest(production_store, job)
    assert len(m["candidates"]) == 7 and all(c["decision"] in ("kept", "rejected") for c in m["candidates"])
    assert len(m["dataset"]) == 3


@pytest.fixture(scope="module")
def train_jobs(production_client, curated) -> dict[str, str]:
    """One training run submitted twice: as values-gpu runs it (a Kubernetes Job) and in the training
    pod's own process. Job ids by executor."""
    assert curated.state == o.JOB_STATE_SUCCEEDED, curated.error
    run_spec = training_pb2.RunSpec(name="prod", base_model=MODEL, dataset_uri=curated.summary["dataset_uri"],
                                    trigger_token="ohwx person", rank=4, epochs=1, resolution=64, seed=1,
                                    sample_prompts=["ohwx person"], sample_seeds=[0], sample_steps=2)
    ids = {"kubernetes": production_client.submit(o.JobSpec(train=o.TrainSpec(run=run_spec))).job_id}
    run_spec.executor = training_pb2.EXECUTOR_IN_PROCESS
    ids["in_process"] = production_client.submit(o.JobSpec(train=o.TrainSpec(run=run_spec))).job_id
    return ids


def test_train(production_client, train_jobs):
    # no Kubernetes API server can run here, so the values-gpu run fails and says why; the same run
    # in the training pod's own process succeeds
    job = production_client.follow(train_jobs["kubernetes"], quiet=True)
    assert job.state == o.JOB_STATE_FAILED
    assert "kubernetes" in job.error.lower(), job.error
    job = production_client.follow(train_jobs["in_process"], quiet=True)
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    assert int(job.summary["checkpoints"]) == 1


def test_storyboard(production_client, production_store, submitted):
    job = production_client.follow(submitted["storyboard"], quiet=True)
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    attempts = manifest(production_store, job)["attempts"]
    assert 1 <= len(attempts) <= 2 and all(a["frame"] == 0 for a in attempts)


def test_open_eyes_with_codeformer(production_stack, production_client, production_store, submitted):
    job = production_client.follow(submitted["open_eyes"], quiet=True)
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    m = manifest(production_store, job)
    assert len(m["variations"]) == 1 and len(m["faces"]) == 1  # the stand-in pack plants one face
    # CodeFormer ran once, for this job (no other job restores; warm-up inference is off, conftest.py)
    assert rpc_count(production_stack, "restoration", "Restore") == submitted["restores"] + 1


def test_diversity(production_client, production_store, submitted):
    job = production_client.follow(submitted["diversity"], quiet=True)
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    assert [s["setting"] for s in manifest(production_store, job)["settings"]] == ["base", "euler-a"]


def test_a_failed_job_reaches_the_trace_collector(production_traces, production_client, train_jobs):
    """values-gpu's tracing (10% of traces sampled; failed work and calls over 5 s always kept) with
    the collector replaced by a local OTLP receiver: the Kubernetes-Job training run fails, so its
    job span arrives, marked failed, whatever this machine's speed."""
    production_client.follow(train_jobs["kubernetes"], quiet=True)
    production_traces.wait_for(lambda spans: any(
        s.service == "likeness-orchestrator" and s.name == "job train" and s.status_code == 2 for s in spans),
        timeout=30)
