"""The curate job on the demo set: exactly the rejections the set was built to produce, quotas met."""

import json
from collections import Counter
from pathlib import Path

import pytest

from likeness.api.v1 import orchestrator_pb2 as o
from likeness.core.settings import CommonSettings
from likeness.core.store import open_store
from tests.e2e.conftest import demo_curate_spec

pytestmark = pytest.mark.slow


def test_demo_set_gets_exactly_its_expected_rejections(jobs_client, e2e_stack, demo_candidates):
    uri, demo = demo_candidates
    job = jobs_client.follow(jobs_client.submit(demo_curate_spec(uri, demo, "e2e-demo/")).job_id, quiet=True)
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    store = open_store(CommonSettings(store_uri=e2e_stack.env["LIKENESS_STORE_URI"]))
    decided = {c["id"]: c for c in json.loads(store.get(job.manifest.uri))["candidates"]}
    mismatches = []
    groups: dict[str, list[str]] = {}
    for item in demo.items:
        c = decided[str(Path(item.path).with_suffix("")).replace("/", "-")]
        if item.duplicate_group:
            groups.setdefault(item.duplicate_group, []).append(c["reason"])
        passed = ("", "not_selected", "outlier") + (("duplicate",) if item.duplicate_group else ())
        got = "kept" if c["reason"] in passed else c["reason"]
        if got != item.expected:
            mismatches.append((item.path, item.expected, got, c["detail"]))
    assert not mismatches, mismatches
    # of each group of copies of one portrait exactly one survives duplicate removal, and every
    # removed one names a kept image of its group
    for name, reasons in groups.items():
        assert reasons.count("duplicate") == len(reasons) - 1, (name, reasons)
    for c in decided.values():
        if c["reason"] == "duplicate":
            assert decided[c["duplicate_of"]]["reason"] != "duplicate", c
    kept = [c for c in decided.values() if c["decision"] == "kept"]
    seeds = len({i.seed for i in demo.items})
    assert len(kept) == 4 * seeds
    assert set(Counter(c["seed"] for c in kept).values()) == {4}  # exactly 4 per seed
    assert sum(1 for c in kept if c["image_type"] == "original") >= seeds
    outliers = [c for c in decided.values() if c["reason"] == "outlier"]
    assert len(outliers) <= 3  # the encoder may flag a few backdrop-like photos; never many
