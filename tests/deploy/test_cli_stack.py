"""A new user's path: `make up`, then every job kind through the `likeness` CLI as the README writes
it, on the embedded defaults (tiny-sdxl, classical encoder). The CLI finds the stack through the
state file `make up` writes, uploads local folders into the stack's own S3 store, and every job
leaves a manifest naming its models (stand-ins included) and a report that says so first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from likeness.client import stack_state
from likeness.core.pngmeta import read_png_metadata, read_request
from likeness.core.store import open_store
from tests.deploy.test_stack import make

pytestmark = pytest.mark.slow
NOISE = "random weights: these images are noise; validation figures on them mean nothing"


@pytest.fixture(scope="module")
def stack():
    state_dir = Path(tempfile.mkdtemp(prefix="likeness-cli-stack-"))
    env = {**os.environ, "LIKENESS_STACK_DIR": str(state_dir), "LIKENESS_STACK_PORTS": "auto", "HF_HUB_OFFLINE": "1"}
    try:
        up = make("up", env, timeout=400)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        candidates = state_dir / "candidates"
        subprocess.run([sys.executable, "-m", "likeness.client.demo_set", str(candidates), "2"], check=True,
                       capture_output=True, timeout=120)
        state = stack_state.find(state_dir)
        yield state_dir, candidates, open_store(stack_state.store_settings(state))
    finally:
        down = make("down", env, timeout=180)
        assert down.returncode == 0, down.stdout + down.stderr
        subprocess.run(["rm", "-rf", str(state_dir)], check=False)


def likeness(state_dir: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    # no S3 variables in the environment: the state file alone must lead the CLI to the stack's store
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIKENESS_S3", "LIKENESS_STORE"))}
    done = subprocess.run([sys.executable, "-m", "likeness", *args], capture_output=True, text=True, timeout=400,
                          env={**env, "LIKENESS_STATE_DIR": str(state_dir), "COLUMNS": "200"})
    if ok:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def job_of(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout)


def outputs(store, job: dict) -> tuple[dict, str]:
    return json.loads(store.get(job["manifest"]["uri"])), store.get(job["report"]["uri"]).decode()


@pytest.fixture(scope="module")
def curated(stack):
    state_dir, candidates, store = stack
    # eye gate off as in `make demo`: some demo people look down, which an eye-aspect-ratio reads as closed
    done = likeness(state_dir, "curate", str(candidates), "--target", "6", "--quota",
                    "dimension=seed,group=*,min=3,max=3", "--min-quality", "0.45", "--policy-min-eye-openness", "0",
                    "--trigger-token", "ohwx person", "--json")
    return job_of(done)


def test_curate_uploads_a_local_folder_to_the_stack_store(stack, curated):
    _, _, store = stack
    assert curated["state"] == "JOB_STATE_SUCCEEDED", curated
    assert curated["summary"]["selected"] == "6" and curated["summary"]["dataset_uri"].startswith("s3://")
    manifest, report = outputs(store, curated)
    models = {m["role"]: m for m in manifest["models"]}
    assert models["encoder"]["name"] == "classical-v1" and models["encoder"]["stand_in"] == "classical features"
    assert models["detector"]["name"] == "blazeface" and not models["detector"]["stand_in"]
    assert manifest["outcome"] == {"state": "SUCCEEDED", "reason": ""}
    assert "classical features" in report and "clusters: classical-v1 (classical features)" in report


def test_train_on_the_curated_set(stack, curated):
    state_dir, _, store = stack
    job = job_of(likeness(state_dir, "train", curated["summary"]["dataset_uri"], "--epochs", "1", "--resolution", "64",
                          "--sample-prompts", "ohwx person", "--sample-seeds", "0", "--sample-steps", "2",
                          "--batch-size", "2", "--json"))
    assert job["state"] == "JOB_STATE_SUCCEEDED", job
    manifest, report = outputs(store, job)
    assert any(m["name"] == "tiny-sdxl" and m["stand_in"] == "random weights" for m in manifest["models"])
    assert report.index("Stand-in models") < report.index("<h2>Summary</h2>")


def test_storyboard_is_refused_at_submit_without_a_text_tower_then_runs_without_the_clip_check(stack):
    state_dir, candidates, store = stack
    refused = likeness(state_dir, "storyboard", "--frame-prompts", "walking", ok=False)
    assert refused.returncode == 2 and "FAILED_PRECONDITION" in refused.stderr and "--skip-clip-check" in refused.stderr
    # with a reference photo: IP-Adapter (tiny-ip-adapter-sdxl) guides every frame, identity is the photo's
    reference = str(candidates / "1" / "original" / "portrait.png")
    done = likeness(state_dir, "storyboard", "--character", "a woman with red hair", "--frame-prompts", "walking",
                    "--frame-prompts", "reading", "--skip-clip-check", "--width", "64", "--height", "64",
                    "--steps", "2", "--retry-budget", "1", "--reference-image", reference, "--json", ok=False)
    job = job_of(done)
    # noise frames may or may not show a face; whatever the outcome, it is stated with its reason
    assert job["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED"), job
    assert (done.returncode == 0) == (job["state"] == "JOB_STATE_SUCCEEDED")
    manifest, report = outputs(store, job)
    assert manifest["outcome"]["state"] == job["state"].removeprefix("JOB_STATE_")
    if job["state"] == "JOB_STATE_FAILED":
        assert "require_all_frames" in job["error"] and manifest["outcome"]["reason"] == job["error"]
    assert report.index(NOISE) < report.index("<h2>Summary</h2>")
    assert manifest["settings"]["reference_image"] and "identity similarity to the reference image" in report
    attempt = store.get(manifest["attempts"][0]["uri"])
    assert read_request(attempt)["reference_scale"] == pytest.approx(0.6)  # the generator got the reference
    shown = likeness(state_dir, "jobs", "show", job["jobId"], ok=False).stdout
    assert shown.lstrip().startswith(job["state"].removeprefix("JOB_STATE_"))


def test_open_eyes_results_name_their_models(stack):
    state_dir, candidates, store = stack
    job = job_of(likeness(state_dir, "open-eyes", str(candidates / "1" / "original" / "portrait.png"),
                          "--variations", "2", "--steps", "2", "--json"))
    assert job["state"] == "JOB_STATE_SUCCEEDED", job
    manifest, _ = outputs(store, job)
    png = store.get(manifest["result"]["uri"])
    parameters, request = read_png_metadata(png)["parameters"], read_request(png)
    assert "Stand-in models" in parameters and "random weights" in parameters
    assert {m["name"]: m["stand_in"] for m in request["models"]}["tiny-sdxl"] == "random weights"


def test_diversity_records_settings_and_intervals(stack):
    state_dir, candidates, store = stack
    job = job_of(likeness(state_dir, "diversity", str(candidates / "1" / "original"), "--width", "64", "--height", "64",
                          "--setting", "name=base,count=3,steps=2", "--nearest-k", "1",
                          "--setting", "name=wild,count=3,steps=2,sampler=euler_ancestral,noise_injection=0.3",
                          "--json"))
    assert job["state"] == "JOB_STATE_SUCCEEDED", job
    manifest, report = outputs(store, job)
    wild = manifest["settings"][1]
    assert wild["parameters"]["sampler"] == "euler_ancestral" and wild["parameters"]["noise_injection"] == 0.3
    recall = wild["metrics"]["recall"]
    assert 0 <= recall["value"] <= 1 and 0 <= recall["ci_low"] <= recall["ci_high"] <= 1
    assert "Metrics per setting" in report
