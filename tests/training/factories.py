"""Small builders shared by the training tests."""

from __future__ import annotations

import dataclasses

from likeness.training.registry import ArtifactRef, CheckpointRecord, RunRegistry
from likeness.training.spec import RunSpec, resolve


def resolved_spec(run_id: str = "run-a", **overrides) -> RunSpec:
    base = RunSpec(base_model="tiny-sdxl", dataset_uri="datasets/faces/", trigger_token="ohwx woman", rank=4,
                   epochs=2, seed=7)
    return resolve(dataclasses.replace(base, **overrides), native_resolution=64, tiny_model=True,
                   default_executor="in_process", run_id=run_id)


def artifact(name: str, size: int) -> ArtifactRef:
    return ArtifactRef(f"file:///store/{name}", "0" * 64, size, "application/octet-stream")


def add_run(registry: RunRegistry, run_id: str, *, lora_size: int = 1000, **overrides):
    spec = resolved_spec(run_id, **overrides)
    dataset = {"dataset_digest": "d" * 64, "captions_digest": "c" * 64, "image_count": 3, "total_steps": 6}
    registry.create_run(run_id, spec.to_dict(), executor="in_process", dataset=dataset)
    registry.mark_running(run_id, total_steps=6)
    for step in range(1, 7):
        registry.record_step(run_id, step, 0.5 / step, 1e-4)
    registry.add_checkpoint(run_id, CheckpointRecord(
        epoch=1, step=6, loss=0.1, diffusers_weights=artifact("d", lora_size),
        kohya_weights=artifact("k", lora_size), state=artifact("s", 3 * lora_size), sample_grid=None))
    registry.set_best(run_id, 1)
    registry.finish(run_id, "succeeded")
    return registry.get(run_id)
