"""Fixtures of the embedding tests: a model repository holding the random-weight tiny-clip."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_clip_repo(tmp_path_factory):
    """(ModelRepository, repository folder) with `tiny-clip` registered (built once per session)."""
    from likeness.core.modelrepo import ModelRepository
    from likeness.embedding.encoders.tiny_clip import ensure_tiny_clip

    root = tmp_path_factory.mktemp("embedding-models")
    repo = ModelRepository(root / "models", root / "cache")
    ensure_tiny_clip(repo)
    return repo, root / "models"
