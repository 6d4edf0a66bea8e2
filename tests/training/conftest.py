"""Fixtures of the training tests: a session-wide model repository holding tiny-sdxl and
tiny-sd15, small photo datasets written to a store, and a TrainingRuns/TrainingSettings pair."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from likeness.core.images import encode_png
from tests.photos import skimage_photo

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CAPTIONS = ("a woman in a space suit, smiling", "a cup of coffee, saucer", "a cat, orange fur",
            "a rocket on a launch pad")


def small_photo(name: str, size=(64, 48)) -> np.ndarray:
    return np.asarray(Image.fromarray(skimage_photo(name)).resize(size, Image.Resampling.LANCZOS))


def write_dataset(store, prefix: str, n: int = 2, *, captions: bool = True, sizes=None) -> str:
    """n photos (with same-name .txt captions) under `prefix`; returns the prefix."""
    for i in range(n):
        size = sizes[i] if sizes else (64, 48)
        store.put(f"{prefix}/img_{i:03d}.png", encode_png(small_photo(PHOTOS[i % 4], size)), "image/png")
        if captions:
            store.put(f"{prefix}/img_{i:03d}.txt", CAPTIONS[i % 4].encode(), "text/plain")
    return prefix


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    """A folder model repository with tiny-sdxl and tiny-sd15 registered (built once)."""
    from likeness.core.modelrepo import ModelRepository
    from likeness.diffusion.tiny_sdxl import ensure_tiny_model

    root = tmp_path_factory.mktemp("models")
    repo = ModelRepository(root, tmp_path_factory.mktemp("model-cache"))
    for name in ("tiny-sdxl", "tiny-sd15"):
        ensure_tiny_model(repo, name)
    return root


@pytest.fixture
def settings(tmp_path, model_root):
    from likeness.training.settings import TrainingSettings

    return TrainingSettings(
        store_uri=f"file://{tmp_path}/store", model_repository=f"file://{model_root}",
        model_cache_dir=str(tmp_path / "cache"), training_database_url=f"sqlite:///{tmp_path}/runs.db",
        training_watch_interval_seconds=0.05, metrics_enabled=False, port=0)


@pytest.fixture
def registry(tmp_path):
    """An empty SQLite run registry."""
    from likeness.training.registry import RunRegistry

    reg = RunRegistry(f"sqlite:///{tmp_path}/runs.db")
    yield reg
    reg.close()


@pytest.fixture
def ctx(settings):
    from likeness.training.app import create_context

    context = create_context(settings)
    yield context
    context.registry.close()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on the shared 2-core machines run several times faster on one thread
    (bench/training.py); restored afterwards so other packages' tests keep torch's default."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
