"""What a kubelet would do with a training Job's pod template, for tests without a cluster:
resolve the container's env (secretKeyRefs from a dict standing in for the Secrets) and run its
command as a local process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def pod_env(container: dict, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) in secrets:
                env[e["name"]] = secrets[(ref["name"], ref["key"])]
            else:
                assert ref.get("optional"), f"{e['name']} needs Secret {ref['name']}/{ref['key']}"
    env.update(LIKENESS_TRAINING_TORCH_THREADS="1", PATH=os.environ["PATH"], PYTHONPATH=str(ROOT / "services"))
    return env


def start_pod(container: dict, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """The container's command with this venv's python and torchrun."""
    bin_dir = Path(sys.executable).parent
    local = {"python": sys.executable, "torchrun": str(bin_dir / "torchrun")}
    command = [local.get(c, c) for c in container["command"]]
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
