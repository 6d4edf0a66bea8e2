"""Benchmarks keep working when the code they measure is reshaped: every name and attribute a
bench script uses (including the functions it patches to time them) still exists, the patches still
accept the calls they replace, and every bench is in the re-run list with the command the docs give.
Nothing here is timed."""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.bench.bench_refs import BENCH, ROOT, missing_refs, resolve

SCRIPTS = sorted(p for p in BENCH.glob("*.py"))
# Benchmarks with a main, and why some are not in bench/run_all.py's list
RUN_ON_THEIR_OWN = {"pipeline", "scaling", "open_eyes"}  # minutes per run, several consecutive runs
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


def accepts_the_same_calls(original, wrapper) -> list[str]:
    """What a call made as for `original` would not bind to `wrapper` (by parameter name and place)."""
    orig = list(inspect.signature(original).parameters.values())
    wrap = list(inspect.signature(wrapper, follow_wrapped=False).parameters.values())
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in wrap)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in wrap)
    positional = [p for p in wrap if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name: p for p in wrap}
    problems = []
    for i, p in enumerate(orig):
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if i < len(positional):
                if positional[i].name != p.name:
                    problems.append(f"parameter {i} is {positional[i].name!r}, the original's {p.name!r}")
            elif not var_pos:
                problems.append(f"no place for {p.name!r}")
        elif p.kind is p.KEYWORD_ONLY and p.name not in by_name and not var_kw:
            problems.append(f"no keyword {p.name!r}")
    names = {p.name for p in orig}
    problems += [f"requires {p.name!r}, unknown to the original" for p in wrap
                 if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
    return problems


def patched_targets(path: Path) -> list[tuple[object, str]]:
    """(owner, attribute) of every `Name.attr = ...` in the script whose Name is imported code."""
    from tests.bench.bench_refs import imported_names

    tree = ast.parse(path.read_text())
    names = imported_names(tree)
    targets = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in names:
                    targets.append((resolve(*names[t.value.id]), t.attr))
    return targets


def test_open_eyes_timing_patches_accept_the_calls_they_replace():
    from open_eyes_stack import ModelClock

    targets = patched_targets(BENCH / "open_eyes_stack.py")
    assert len(targets) >= 4  # the engine's run, restore_face, the runner's attempt, the job's calls
    saved = [(owner, attr, owner.__dict__[attr]) for owner, attr in targets]
    clock = ModelClock()
    try:
        clock.install()
        for owner, attr, original in saved:
            wrapper = getattr(owner, attr)
            assert wrapper is not original, f"{attr} was not patched"
            assert accepts_the_same_calls(original, wrapper) == [], f"{owner.__name__}.{attr}"
        # the job's calls, made as the workflows make them, are recorded by their kind of work
        from likeness.orchestrator.context import JobContext

        seen = {}

        async def cached(kind, inputs, call, response_type):
            seen["kind"] = kind
            return await call()

        async def client_call(method, request):
            return "answer"

        client = SimpleNamespace(call=client_call, response_type=lambda method: None)
        request = SimpleNamespace(SerializeToString=lambda: b"r")
        answer = asyncio.run(JobContext.call(SimpleNamespace(cached=cached), client, "Generate", request,
                                             work="inpaint"))
        assert (answer, seen["kind"], clock.requests["inpaint"]) == ("answer", "inpaint", request)
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


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
    listed = {b.args[0].removeprefix("bench/").removesuffix(".py") for b in run_all.BENCHES}
    mains = {p.stem for p in SCRIPTS if has_main(p)}
    assert mains - listed - RUN_ON_THEIR_OWN - set(NOT_BENCHMARKS) == set()
    for b in run_all.BENCHES:
        assert f"python {b.command}`" in docs, f"docs/benchmarks.md does not give the command {b.command!r}"


def test_every_bench_prints_its_machine():
    for p in SCRIPTS:
        if has_main(p) and p.stem not in ("ddp_worker", "run_all"):
            calls = {n.func.id for n in ast.walk(ast.parse(p.read_text()))
                     if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            assert "Machine" in calls, f"{p.name} does not print the machine it ran on"


def test_spread_and_span():
    from timing import round_ratios, span, spread

    assert spread([2.0, 1.0, 4.0]) == 4.0
    assert span([3.0, 1.0, 2.0], 1) == "2.0 (1.0-3.0)"
    assert round_ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
