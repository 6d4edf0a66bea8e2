"""The soak of bench/load.py in a shortened form (40 s instead of 10 minutes): 4 concurrent callers
of detection Assess, embedding EmbedImages and generation Generate (tiny-sdxl) against live
processes. The full 10-minute form (`python bench/load.py --minutes 10`) is in docs/reliability.md.

Asserted here: no error other than RESOURCE_EXHAUSTED backpressure, RSS growth of every service at
most 10% from the end of the first window to the end, and p95 of the last window at most 2x the
first window's + 50 ms (looser than the soak's 1.5x + 20 ms: a 10-second window on a shared 2-core
CI machine is at the mercy of its neighbours)."""

from __future__ import annotations

import pytest

from bench.load import SERVICES, run_load

pytestmark = pytest.mark.slow


def test_shortened_soak(rel_stack):
    result = run_load({n: rel_stack.address(n) for n in SERVICES}, {n: rel_stack.procs[n].pid for n in SERVICES},
                      seconds=40, callers=4)
    assert {k: v for k, v in result["errors"].items() if k != "RESOURCE_EXHAUSTED"} == {}, result["errors"]
    for name, call in result["calls"].items():
        assert call["ok"] >= 20, (name, call)
        assert call["p95_last_ms"] <= 2 * call["p95_first_ms"] + 50, (name, call)
    for name, rss in result["rss"].items():
        assert rss["growth"] <= 0.10, (name, rss)
