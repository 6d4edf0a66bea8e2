"""Benchmarks keep working when the code they measure is reshaped: every name and attribute a
bench script uses (including the functions it patches to time them) still exists, and every bench
is in the re-run list with the command the docs give. Nothing here is timed, and no bench is run
here: reading their sources is what keeps this quick."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.bench.bench_refs import BENCH, ROOT, missing_refs

SCRIPTS = sorted(p for p in BENCH.glob("*.py"))
# Scripts with a main that are not in bench/run_all.py's lists, and why
NOT_BENCHMARKS = {"ddp_worker": "one rank of training.py's data-parallel section, started by it",
                  "gpu_check": "needs an NVIDIA GPU (bench/gpu_check.sh)", "run_all": "the runner itself"}


def has_main(path: Path) -> bool:
    return 'if __name__ == "__main__":' in path.read_text()


@pytest.fixture(scope="module", autouse=True)
def bench_on_path():
    """As when a bench runs as a script: bench/ first on sys.path (they import `machine`, `timing` bare)."""
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_name_a_bench_uses_still_exists(script):
    assert missing_refs(script.read_text()) == []


def test_a_moved_function_is_noticed():
    # what broke bench/open_eyes_stack.py once: restore_face left the restoration servicer module
    source = ("from likeness.restoration import servicer as s\n"
              "from likeness.orchestrator.gone import Nothing\n"
              "def f():\n    s.restore_face = None\n")
    assert missing_refs(source) == ["likeness.orchestrator.gone.Nothing (ModuleNotFoundError)", "s.restore_face"]


def test_png_level_changes_what_encode_png_writes():
    from open_eyes_stack import png_level

    from likeness.core.images import encode_mask_png, encode_png

    image = np.tile(np.arange(64, dtype=np.uint8), (64, 1))[..., None].repeat(3, axis=2)
    mask = (image[..., 0] > 31).astype(np.uint8) * 255
    default = len(encode_png(image)), len(encode_mask_png(mask))
    with png_level(0):
        stored = len(encode_png(image)), len(encode_mask_png(mask))
    assert stored[0] > default[0] and stored[1] > default[1]
    assert (len(encode_png(image)), len(encode_mask_png(mask))) == default


@pytest.mark.slow  # building the generation service imports torch and diffusers: ~10 s on a busy machine
def test_private_attributes_benches_rely_on():
    from likeness.training.trainer import LoraTrainer

    assert callable(LoraTrainer._plan) and callable(LoraTrainer.train_step)  # bench/ddp_worker.py
    from likeness.generation.app import create_service
    from likeness.generation.settings import GenerationSettings

    # bench/generation.py and bench/controlnet.py reach the service's generator through its servicer
    service = create_service(GenerationSettings(port=0, metrics_enabled=False, generation_keep_warm="",
                                                generation_build_tiny_models=False))
    generator = service.servicers[0][1]._generator
    assert callable(generator.generate) and isinstance(generator.batcher.max_wait, float)
    assert callable(generator.manager.repo.spec) and callable(generator.manager.repo.fetch)


def test_every_bench_is_in_the_rerun_list_with_its_documented_command():
    run_all = importlib.import_module("run_all")
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    benches = run_all.BENCHES + run_all.ON_THEIR_OWN
    listed = {Path((b.args or b.form(True))[0]).stem for b in benches}
    mains = {p.stem for p in SCRIPTS if has_main(p)}
    assert mains - listed - set(NOT_BENCHMARKS) == set()
    for b in run_all.BENCHES:
        assert f"python {b.command}`" in docs, f"docs/benchmarks.md does not give the command {b.command!r}"
    assert {b.name for b in run_all.ON_THEIR_OWN} == {"pipeline", "scaling", "open_eyes"}
    assert all(not b.args and b.form(True) for b in run_all.ON_THEIR_OWN)


def test_every_bench_prints_its_machine():
    for p in SCRIPTS:
        if has_main(p) and p.stem not in ("ddp_worker", "run_all"):
            calls = {n.func.id for n in ast.walk(ast.parse(p.read_text()))
                     if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            assert "Machine" in calls, f"{p.name} does not print the machine it ran on"


def test_spread_and_span():
    from timing import span, spread

    assert spread([2.0, 1.0, 4.0]) == 4.0
    assert span([3.0, 1.0, 2.0], 1) == "2.0 (1.0-3.0)"
