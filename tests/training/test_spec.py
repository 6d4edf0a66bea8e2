"""Spec validation: every bad value is rejected with a message naming the field and the limit."""

from __future__ import annotations

import dataclasses

import pytest

from likeness.core.errors import InvalidArgument
from likeness.training.spec import KubernetesSpec, RunSpec, resolve
from tests.training.factories import resolved_spec

GOOD = RunSpec(base_model="tiny-sdxl", dataset_uri="datasets/a/", rank=4)


def _resolve(**changes):
    return resolve(dataclasses.replace(GOOD, **changes), native_resolution=64, tiny_model=True,
                   default_executor="in_process", run_id="r1")


@pytest.mark.parametrize("changes, field, words", [
    ({"rank": 0}, "spec.rank", "0 is outside [1, 256]"),
    ({"rank": 257}, "spec.rank", "257 is outside [1, 256]"),
    ({"unet_lr": -1e-4}, "spec.unet_lr", "must be > 0"),
    ({"unet_lr": float("nan")}, "spec.unet_lr", "must be > 0"),
    ({"text_encoder_lr": -1.0}, "spec.text_encoder_lr", "must be > 0"),
    ({"base_model": ""}, "spec.base_model", "is required"),
    ({"dataset_uri": " "}, "spec.dataset_uri", "is required"),
    ({"alpha": -2.0}, "spec.alpha", "must be > 0"),
    ({"caption_dropout": 1.0}, "spec.caption_dropout", "outside [0.0"),
    ({"batch_size": 65}, "spec.batch_size", "65 is outside [1, 64]"),
    ({"epochs": 0}, "spec.epochs", "0 is outside [1, 1000]"),
    ({"resolution": 100}, "spec.resolution", "not a multiple of 8"),
    ({"resolution": 4096}, "spec.resolution", "outside [64, 2048]"),
    ({"lr_scheduler": "cosine_restarts"}, "spec.lr_scheduler", "not one of"),
    ({"sample_prompts": ("p",) * 9, "sample_seeds": tuple(range(8))}, "spec.sample_prompts", "72 samples"),
    ({"kubernetes": KubernetesSpec(gpus=9)}, "spec.kubernetes.gpus", "outside [0, 8]"),
    ({"kubernetes": KubernetesSpec(memory="lots")}, "spec.kubernetes.memory", "not a Kubernetes quantity"),
    ({"kubernetes": KubernetesSpec(tolerations=({"operator": "In"},))}, "spec.kubernetes.tolerations[0].operator",
     "'In'"),
])
def test_bad_values_name_the_field_and_limit(changes, field, words):
    with pytest.raises(InvalidArgument) as info:
        _resolve(**changes)
    assert info.value.field == field and words in str(info.value)


def test_defaults_are_resolved_and_recorded():
    spec = _resolve()
    assert spec.alpha == 4.0 and spec.resolution == 64 and spec.sample_steps == 4
    assert spec.output_prefix == "runs/r1" and spec.executor == "in_process" and spec.name == "r1"
    assert set(spec.defaulted) >= {"alpha", "resolution", "sample_steps", "output_prefix"}
    assert "rank" not in spec.defaulted
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_explicit_values_are_kept():
    spec = resolved_spec(alpha=2.0, resolution=128, output_prefix="mine/run/")
    assert (spec.alpha, spec.resolution, spec.output_prefix) == (2.0, 128, "mine/run")
    assert "alpha" not in spec.defaulted
