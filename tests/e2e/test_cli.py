"""The `likeness` command against the running stack: health, a curate job from a local folder with
its progress and summary, and the jobs list."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import likeness as likeness_pkg
from likeness.client import stack_state
from tests.photos import skimage_photo, tom_hanks

pytestmark = pytest.mark.slow


def likeness(*args, state=None, timeout=300):
    cmd = [sys.executable, "-m", "likeness", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", "LIKENESS_STATE_DIR": str(state or "")})


def test_version_and_health(e2e_stack):
    assert likeness("version").stdout.strip() == likeness_pkg.__version__
    ok = likeness("health", e2e_stack.address("detection"))
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    down = likeness("health", "127.0.0.1:1", "--timeout", "1")
    assert down.returncode == 2 and "UNAVAILABLE" in down.stderr


def test_curate_a_local_folder_and_list_jobs(e2e_stack, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    # the CLI finds the store and the orchestrator of a stack through its state file
    stack_state.update(state, running=True, client=stack_state.client_block(e2e_stack.address("orchestrator"),
                                                                            e2e_stack.env))
    folder = tmp_path / "candidates"
    for seed, img in (("1", skimage_photo("astronaut")), ("2", tom_hanks())):
        (folder / seed / "original").mkdir(parents=True)
        Image.fromarray(img).save(folder / seed / "original" / "a.png")
        Image.fromarray(np.ascontiguousarray(img[:, ::-1])).save(folder / seed / "original" / "b.png")
    (folder / "3" / "original").mkdir(parents=True)
    Image.fromarray(skimage_photo("rocket")).save(folder / "3" / "original" / "rocket.png")
    done = likeness("curate", str(folder), "--target", "2", "--quota", "dimension=seed,group=*,max=1", "--state",
                    str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.lstrip().startswith("SUCCEEDED")  # the outcome leads
    assert "rejected_no_face" in done.stdout and "report" in done.stdout
    job_id = done.stderr.split("job ", 1)[1].split()[0]
    shown = json.loads(likeness("jobs", "show", job_id, "--json", "--state", str(state)).stdout)
    assert shown["state"] == "JOB_STATE_SUCCEEDED" and shown["summary"]["selected"] == "2"
    listed = likeness("jobs", "list", "--state", str(state))
    assert listed.returncode == 0 and "curate" in listed.stdout and "SUCCEEDED" in listed.stdout
    bad = likeness("curate", str(folder), "--target", "0", "--state", str(state))
    assert bad.returncode != 0 and "target_count" in (bad.stdout + bad.stderr)
