"""The production shape, run here: every service started by tools/stack.py with exactly the
environment `charts/likeness/values-gpu.yaml` renders (engine onnxruntime, float16, open_clip,
CodeFormer, InsightFace + ArcFace, Kubernetes-Job training, PostgreSQL, S3), changed only where a
CPU machine cannot follow it (tools.stack.production_overrides: devices -> cpu, GPU-only ONNX
Runtime providers dropped). Store and database are real: SeaweedFS (S3) and PostgreSQL.

The model repository holds STAND-INS under the production names, since no real weights can be
downloaded here (their outputs are meaningless; tests check mechanics, never content):
  sdxl-base           tiny-sdxl architecture, random weights (refiner/IP-Adapter: the tiny ones)
  open-clip-vit-b-32  tiny-clip, random weights
  codeformer          the real CodeFormer architecture, random weights (official checkpoint layout)
  buffalo_l           synthetic InsightFace pack: real graph interfaces, a planted face per image
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tools.stack import SERVICES, Stack

VALUES_GPU = Path(__file__).resolve().parents[2] / "charts" / "likeness" / "values-gpu.yaml"


@contextlib.contextmanager
def environment(env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_of(env: dict[str, str]):
    from likeness.core.settings import CommonSettings

    with environment(env):
        return CommonSettings()


def seed_stand_in_models(env: dict[str, str]) -> None:
    """Registers the stand-ins (module docstring) in the S3 model repository of `env`."""
    import torch

    from likeness.core.modelrepo import ModelRepository
    from likeness.core.store import open_store
    from likeness.diffusion.tiny_sdxl import build_tiny_model, ensure_tiny_model, tiny_model_config
    from likeness.embedding.encoders.tiny_clip import ensure_tiny_clip
    from likeness.restoration.restorers.codeformer_arch import CodeFormer
    from tests.detection import synthetic_pack

    settings = settings_of(env)
    repo = ModelRepository.from_settings(settings, open_store(settings))
    with tempfile.TemporaryDirectory(prefix="stand-ins-") as tmp:
        root = Path(tmp)
        for name in ("tiny-sdxl-refiner", "tiny-ip-adapter-sdxl"):
            ensure_tiny_model(repo, name)
        build_tiny_model("sdxl", root / "sdxl-base")
        repo.register("sdxl-base", root / "sdxl-base", kind="sdxl", backend="diffusers",
                      config={**tiny_model_config("sdxl"), "stand_in": "tiny-sdxl architecture, random weights"})
        ensure_tiny_clip(repo, "open-clip-vit-b-32")
        torch.manual_seed(0)
        (root / "codeformer").mkdir()
        torch.save({"params_ema": CodeFormer().state_dict()}, root / "codeformer" / "codeformer.pth")
        repo.register("codeformer", root / "codeformer", kind="restorer", backend="codeformer",
                      config={"random_weights": True, "stand_in": "CodeFormer architecture, random weights"})
        det_size = int(env.get("LIKENESS_DETECTION_DET_SIZE", "640"))
        middle = det_size // synthetic_pack.PLANTED_STRIDE // 2
        synthetic_pack.write_pack(root / "buffalo_l", det_size=det_size, cell=(middle, middle))
        repo.register("buffalo_l", root / "buffalo_l", kind="face-pack", backend="insightface",
                      config={"stand_in": "synthetic graphs with a planted face"})


def overridden_settings(engine_cache: Path, tracing_endpoint: str) -> dict[str, dict[str, str]]:
    """Documented settings these tests change from what the chart renders, by service ("*": all)."""
    return {
        # no hub look-ups (not LIKENESS_* settings; nothing is downloaded anyway)
        "*": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
              # nothing routes traffic to these processes but the tests, which have ended when they stop
              "LIKENESS_DRAIN_SECONDS": "0",
              # the cluster's collector (tempo.monitoring) is a local OTLP receiver here; unreachable,
              # every export would be retried, and each process would stop only after giving up
              "LIKENESS_TRACING_ENDPOINT": tracing_endpoint},
        # the stand-in InsightFace pack plants a face box at a fixed place in every image; the face
        # mesh (which checks that a box holds a face) rightly finds none there, so it is off for
        # the stand-in, and only for it
        "detection": {"LIKENESS_DETECTION_MESH_FACES": "0"},
        # the open-eyes test runs CodeFormer's 512 px inference; a warm-up run would do the same work
        # again (tens of seconds on this CPU). The weights still load, and are checked, before SERVING.
        "restoration": {"LIKENESS_RESTORATION_WARMUP_INFERENCE": "false"},
        # as a shared model-cache volume would in a cluster, the engine cache outlives the stack:
        # graphs are exported once per model digest and exporter version (onnx_export.exporter_version)
        "generation": {"LIKENESS_GENERATION_ENGINE_CACHE_DIR": str(engine_cache)},
    }


@pytest.fixture(scope="session")
def production_traces():
    """The OTLP receiver the production stack's services export their spans to."""
    from tests.tracing.otlp_receiver import OtlpReceiver

    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def production_stack(request, production_traces):
    """(Stack state, {service: env}) of a running production-shape stack."""
    # not under pytest's tmp folder: PostgreSQL runs as its own user and must reach the state folder
    state_dir = Path(tempfile.mkdtemp(prefix="likeness-production-"))
    state_dir.chmod(0o755)
    stack = Stack(state_dir)
    envs: dict[str, dict] = {}
    cache = getattr(request.config, "cache", None)  # pytest's cache folder, when its plugin is on
    engine_cache = cache.mkdir("likeness-engine-cache") if cache else state_dir / "engine-cache"

    def before_services(state, rendered):
        changes = overridden_settings(engine_cache, production_traces.endpoint)
        for name, env in rendered.items():
            env.update({**changes["*"], **changes.get(name, {})})
        envs.update(rendered)
        seed_stand_in_models(rendered["generation"])

    try:
        state = stack.up(list(SERVICES), "auto", [str(VALUES_GPU)], before_services=before_services)
        yield state, envs
    finally:
        stack.down(quiet=True)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def production_client(production_stack):
    from likeness.client.jobs_client import JobsClient

    state, _ = production_stack
    client = JobsClient(f"127.0.0.1:{state['ports']['orchestrator']}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def production_store(production_stack):
    from likeness.core.store import open_store

    _, envs = production_stack
    return open_store(settings_of(envs["orchestrator"]))
