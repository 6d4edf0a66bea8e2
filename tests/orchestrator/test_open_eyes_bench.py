"""bench/open_eyes.py times model work by patching the services' functions: when code moves, the
patches must fail here, not silently time nothing. Installs the hooks, runs each wrapper once on
something tiny, and checks that uninstalling restores the originals."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_benchs_hooks_find_their_targets_and_time_what_they_wrap():
    sys.path.insert(0, str(BENCH))
    try:
        from open_eyes_stack import DETECTION_MODEL_CALLS, ModelClock
    finally:
        sys.path.remove(str(BENCH))
    from likeness.orchestrator.context import JobContext
    from likeness.restoration import outputs
    from likeness.restoration.face_restore import FaceToRestore
    from likeness.restoration.restorers.classical import ClassicalRestorer

    originals = {(m, c, f): getattr(getattr(importlib.import_module(m), c), f) for m, c, f in DETECTION_MODEL_CALLS}
    restore_face, call = outputs.restore_face, JobContext.call
    clock = ModelClock()
    clock.install()  # every target must exist (getattr fails otherwise)
    try:
        image = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
        out = outputs.restore_face(image, FaceToRestore((20.0, 20.0, 76.0, 76.0), {}), ClassicalRestorer(), 0.3)
        assert out.shape == image.shape
        seconds = clock.take()
        assert seconds["restore"] >= seconds["restorer"] > 0

        class Ctx:  # JobContext.call's own body runs: it asks `cached` for the unit of work
            async def cached(self, kind, inputs, fn, response_type):
                return await fn()

        class Client:
            def response_type(self, method):
                return None

            async def call(self, method, request):
                assert clock.work == "verify"  # detection passes are booked to the job's unit of work
                return clock._timed_detection(lambda: "answer")()

        request = object.__new__(type("Request", (), {"SerializeToString": lambda self: b"r"}))
        assert asyncio.run(JobContext.call(Ctx(), Client(), "Detect", request, work="verify")) == "answer"
        assert clock.requests["verify"] is request and clock.work == ""
        assert clock.take()["detection:verify"] > 0
        for (m, c, f), original in originals.items():
            assert getattr(getattr(importlib.import_module(m), c), f).__wrapped__ is original, (c, f)
    finally:
        clock.uninstall()
    assert outputs.restore_face is restore_face and JobContext.call is call
    for (m, c, f), original in originals.items():
        assert getattr(getattr(importlib.import_module(m), c), f) is original
