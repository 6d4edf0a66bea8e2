"""Keep-warm and unload-after-idle, with the memory metric following."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from likeness.core import metrics
from likeness.generation.models import ModelManager


class FakeRepo:
    root = "/models"

    def spec(self, name):
        return SimpleNamespace(name=name, kind="sdxl", backend="diffusers", digest="d" * 64, config={})

    def fetch(self, name):
        return f"/models/{name}"


class FakeEngine:
    name = "torch"

    def load_model(self, folder, spec):
        return SimpleNamespace(components={"unet": torch.nn.Linear(10, 10)})  # 110 float32 = 440 bytes


def memory(name):
    return metrics.MODEL_MEMORY.labels("generation", name, "cpu")._value.get()


def test_keep_warm_stays_idle_models_unload():
    manager = ModelManager(FakeRepo(), FakeEngine(), keep_warm=["base"], idle_unload_seconds=30, lora_budget_bytes=1)
    base, refiner = manager.get("base"), manager.get("refiner-x")
    assert base.memory_bytes == 440 and memory("refiner-x") == 440
    assert manager.unload_idle(now=refiner.last_used + 10) == []  # not idle long enough
    assert manager.unload_idle(now=refiner.last_used + 31) == ["refiner-x"]  # base is kept warm
    assert set(manager.loaded()) == {"base"} and memory("refiner-x") == 0 and memory("base") == 440
    assert manager.get("refiner-x") is not refiner  # loads again on demand


def test_zero_idle_seconds_never_unloads():
    manager = ModelManager(FakeRepo(), FakeEngine(), keep_warm=[], idle_unload_seconds=0, lora_budget_bytes=1)
    m = manager.get("a")
    assert manager.unload_idle(now=m.last_used + 10**6) == [] and "a" in manager.loaded()
