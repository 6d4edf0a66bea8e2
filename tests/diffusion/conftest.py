"""Tiny models built once per session (deterministic, ~2 s) for the diffusion-package tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """{kind: folder} of tiny-sdxl, tiny-sdxl-refiner and tiny-sd15 built with `build_tiny_model`."""
    import torch

    from likeness.diffusion.tiny_sdxl import build_tiny_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is 10x faster than an oversubscribed pool
    root = tmp_path_factory.mktemp("tiny")
    try:
        yield {kind: build_tiny_model(kind, root / kind) for kind in ("sdxl", "sdxl-refiner", "sd15")}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sdxl_pipe(tiny_folders):
    from likeness.diffusion.pipelines import load_pipeline

    return load_pipeline(tiny_folders["sdxl"], "sdxl")
