"""LIKENESS_DETECTION_DEVICE decides the InsightFace providers: `cpu` drops GPU providers, `cuda`
requires one (no silent CPU fallback on a GPU pod), `auto` keeps what the build offers."""

from __future__ import annotations

import pytest

from likeness.core.errors import FailedPrecondition
from likeness.detection.backends.insightface import select_providers

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU = ["CPUExecutionProvider"]


@pytest.mark.parametrize("requested,available,device,chosen", [
    ("auto", ALL, "cpu", CPU),
    ("CUDAExecutionProvider,CPUExecutionProvider", ALL, "cpu", CPU),
    ("auto", ALL, "cuda", ALL),
    ("CUDAExecutionProvider", ALL, "cuda:1", ["CUDAExecutionProvider"]),
    ("auto", CPU, "auto", CPU),
])
def test_device_filters_providers(requested, available, device, chosen):
    assert select_providers(requested, available, device) == chosen


def test_cuda_device_without_a_gpu_provider_fails_naming_the_setting():
    with pytest.raises(FailedPrecondition, match="LIKENESS_DETECTION_DEVICE.*cuda needs CUDAExecutionProvider"):
        select_providers("auto", CPU, "cuda")
