"""CompareRuns: seed doc 004's three runs differed only in rank, and nobody noticed."""

from __future__ import annotations

import pytest

from likeness.core.errors import InvalidArgument
from likeness.training.compare import compare_runs
from tests.training.factories import add_run


def test_runs_differing_only_in_rank_name_rank_as_the_difference(registry):
    # the seed-004 situation: identical captions, rank 32 vs 64, alpha left at its default (= rank)
    a = add_run(registry, "r32", rank=32, lora_size=36_000_000)
    b = add_run(registry, "r64", rank=64, lora_size=72_000_000)
    table = compare_runs([a, b])
    assert table.differing_settings == ("spec.rank",)
    assert table.rows[0].field == "spec.rank" and table.rows[0].differs
    assert table.row("spec.rank").values == ("32", "64")
    # alpha differs too, but only because it defaulted to rank: shown and marked, not a cause
    alpha = table.row("spec.alpha")
    assert alpha.differs and alpha.values == ("32 (default = rank)", "64 (default = rank)")
    # the captions and images are visibly identical ...
    assert not table.row("captions_digest").differs and not table.row("dataset_digest").differs
    # ... and the file sizes visibly not
    assert table.row("final.diffusers_weights.size_bytes").differs
    assert not table.row("spec.unet_lr").differs


def test_explicit_alpha_difference_is_a_cause(registry):
    a = add_run(registry, "a", rank=16, alpha=8.0)
    b = add_run(registry, "b", rank=16, alpha=16.0)
    assert compare_runs([a, b]).differing_settings == ("spec.alpha",)


def test_placement_fields_are_shown_but_not_causes(registry):
    a = add_run(registry, "a", name="first")
    b = add_run(registry, "b", name="second")
    table = compare_runs([a, b])
    assert table.differing_settings == ()
    assert table.row("spec.name").differs and table.row("spec.output_prefix").differs


def test_differing_rows_come_first_within_each_category(registry):
    runs = [add_run(registry, f"r{i}", rank=4, seed=i) for i in range(3)]
    table = compare_runs(runs)
    settings = [r for r in table.rows if r.category == "setting"]
    first_same = next(i for i, r in enumerate(settings) if not r.differs)
    assert all(not r.differs for r in settings[first_same:])
    assert table.differing_settings == ("spec.seed",)
    assert [r.category for r in table.rows] == sorted(
        (r.category for r in table.rows), key=["setting", "dataset", "artifact", "result"].index)


def test_bad_requests(registry):
    a = add_run(registry, "a")
    with pytest.raises(InvalidArgument, match="2 to 20"):
        compare_runs([a])
    with pytest.raises(InvalidArgument, match="more than once"):
        compare_runs([a, a])
