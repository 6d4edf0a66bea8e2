"""bench/gpu_check.py's toy-size dry run on the CPU (the GPU measurement itself needs a GPU): the
fp16 vs fp32 parity and the eager vs fast (channels-last) engine paths run end to end and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_reports_parity_and_latency_on_the_cpu():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--tiny",
                          "--compile", "none", "--batches", "1,2"],
                         capture_output=True, text=True, env=env, timeout=600, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])["gpu_check"]
    assert figures["model"] == "tiny-sdxl stand-in" and figures["device"] == "cpu"
    # fp16 moves pixels a little, not to noise: the two runs draw the same picture
    assert 0 < figures["tiny_fp16_vs_fp32_max_abs"] <= 64 and figures["tiny_fp16_vs_fp32_psnr_db"] > 25
    for variant in ("eager", "fast"):
        for batch in (1, 2):
            assert figures[f"{variant}_b{batch}_s_per_image"] > 0
    assert figures["fast_settings"] == {"generation_channels_last": True, "generation_torch_compile": "none"}
