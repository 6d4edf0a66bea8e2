"""Network restorers on their configured device and dtype: the shared NetworkRestorer moves the
network with `.to(device, dtype)` and feeds it inputs of that dtype; float16/bfloat16 run here.
A small convolutional network stands in for CodeFormer/GFPGAN (their 90 M-parameter forward passes
at 512 px in half precision on this CPU would take minutes); the factory test shows both real
restorers receive the settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from likeness.restoration.restorers.factory import create_restorer
from likeness.restoration.restorers.network import NetworkRestorer


class SmallRestorer(NetworkRestorer):
    name = "small"
    weights_file = "small.pth"
    checkpoint_label = "small test network"

    def build(self):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(2, 8),
                                   torch.nn.SiLU(), torch.nn.Conv2d(8, 3, 3, padding=1), torch.nn.Tanh())

    def forward(self, x, fidelity: float):
        assert x.dtype == self.dtype  # inputs follow the network's dtype
        return self.net(x)

    def restore(self, face, fidelity):
        return self.run(face, fidelity)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    torch.save({"params_ema": SmallRestorer(None).build().state_dict()}, folder / "small.pth")
    return folder


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_restorer_on_the_cpu(weights, dtype):
    face = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    reference = SmallRestorer(weights).run(face, 0.5)
    restorer = SmallRestorer(weights, dtype=dtype)
    restorer.load()
    assert {p.dtype for p in restorer.net.parameters()} == {getattr(torch, dtype)}
    assert restorer.describe()["dtype"] == dtype and restorer.describe()["device"] == "cpu"
    out = restorer.run(face, 0.5)
    assert out.dtype == np.uint8 and out.shape == face.shape
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= (2 if dtype == "float16" else 6)


@pytest.mark.parametrize("name", ["codeformer", "gfpgan"])
def test_factory_places_the_real_restorers(name, tmp_path):
    restorer = create_restorer(name, lambda _: tmp_path, device="cpu", dtype="bfloat16")
    assert restorer.device == "cpu" and restorer.dtype == torch.bfloat16
    assert create_restorer(name, lambda _: tmp_path).dtype == torch.float32  # auto on the CPU
