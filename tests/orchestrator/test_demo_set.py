"""The demo candidate set: layout, determinism, and every file's expected outcome checked against
the detection service's own domain code with its default settings (BlazeFace full range, flip
averaging, default ValidationPolicy) plus the curate `min_quality` gate."""

from __future__ import annotations

import json
import re

import pytest

from likeness.core.errors import InvalidArgument
from likeness.core.images import decode_image
from likeness.orchestrator.demo_set import DEMO_MIN_QUALITY, KEPT, MANIFEST, OUTCOMES, build_demo_set

SEEDS = 5
LAYOUT = re.compile(r"^(\d+)/(original|scenario)/([a-z_]+)\.png$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo_set(tmp_path_factory.mktemp("demo"), seeds=SEEDS)


@pytest.fixture(scope="module")
def verdicts(demo):
    """path -> (outcome, quality score, detail) as the detection service would answer, on the
    decoded PNG files (the bytes the curate job sends)."""
    from likeness.detection.app import default_policy, default_weights
    from likeness.detection.backends.factory import create_pipeline
    from likeness.detection.settings import DetectionSettings

    # the service's defaults; identity off: embeddings play no part in a verdict
    settings = DetectionSettings(detection_identity="none")
    pipeline = create_pipeline(settings)
    pipeline.load()
    policy, weights = default_policy(settings), default_weights(settings)
    out = {}
    for item in demo.items:
        rgb = decode_image((demo.root / item.path).read_bytes(), item.path)
        a = pipeline.assess(rgb, policy, weights, min_quality=DEMO_MIN_QUALITY)
        outcome = KEPT if a.verdict.accepted else a.verdict.reason.value.lower()
        out[item.path] = (outcome, a.score, a.verdict.detail)
    return out


def test_layout_manifest_and_captions(demo):
    assert len(demo.items) == 14 * SEEDS
    on_disk = sorted(str(p.relative_to(demo.root)) for p in demo.root.rglob("*.png"))
    assert on_disk == sorted(i.path for i in demo.items)
    for item in demo.items:
        seed, image_type, name = LAYOUT.match(item.path).groups()
        assert (int(seed), image_type, name) == (item.seed, item.image_type, item.name)
        assert 256 <= min(item.width, item.height) and max(item.width, item.height) <= 512
        assert item.expected in OUTCOMES
        assert (demo.root / item.path).with_suffix(".txt").read_text().strip() == item.caption
    written = json.loads((demo.root / MANIFEST).read_text())
    assert written == json.loads(json.dumps(demo.manifest()))
    assert written["min_quality"] == DEMO_MIN_QUALITY


def test_every_outcome_occurs_and_enough_are_kept(demo):
    counts = demo.counts()
    # blurred portraits: the face mesh sees no face in four of them; dark or flat ones: four fall under
    # the blur gate (likeness.orchestrator.demo_set)
    assert counts == {KEPT: 40, "no_face": 9, "multiple_faces": 5, "face_too_small": 5, "turned_away": 5,
                      "low_confidence": 1, "low_quality": 1, "blurry": 4}
    assert demo.kept_per_seed() == {s: {"original": 3, "scenario": 5} for s in range(1, SEEDS + 1)}


@pytest.mark.slow  # with the fixtures: build ~4 s + 84 assessments ~4-8 s on a shared CPU
def test_expected_outcomes_are_what_detection_answers(demo, verdicts):
    wrong = [f"{i.path}: expected {i.expected}, detection says {verdicts[i.path][0]} "
             f"(quality {verdicts[i.path][1]:.3f}; {verdicts[i.path][2]})"
             for i in demo.items if verdicts[i.path][0] != i.expected]
    assert not wrong, "\n".join(wrong)
    # the quality gate is not a knife edge: kept files clear it, low_quality files miss it, by > 0.05
    kept = [verdicts[i.path][1] for i in demo.items if i.expected == KEPT]
    low = [verdicts[i.path][1] for i in demo.items if i.expected == "low_quality"]
    assert min(kept) > DEMO_MIN_QUALITY + 0.05 and max(low) < DEMO_MIN_QUALITY - 0.05


def test_same_bytes_on_every_build_and_seeds_are_a_prefix(demo, tmp_path):
    """Rebuilding (here: the first two seeds, which are the same files) gives identical bytes."""
    again = build_demo_set(tmp_path / "again", seeds=2)
    assert again.items == demo.items[: len(again.items)]
    for item in again.items:
        assert (again.root / item.path).read_bytes() == (demo.root / item.path).read_bytes()
    rebuilt = build_demo_set(tmp_path / "again", seeds=1)  # in place over a previous set
    assert sorted(str(p.relative_to(rebuilt.root)) for p in rebuilt.root.rglob("*.png")) == \
        sorted(i.path for i in rebuilt.items)


@pytest.mark.slow
def test_balanced_selection_is_feasible(demo, verdicts):
    """The demo's selection: 20 of the kept files, exactly 4 per seed, at least one original per seed, at
    most 8 per cluster label (here: one cluster per seed, a tighter case than any clustering)."""
    from likeness.embedding.selection import Candidate, Quota, select

    pool = [Candidate(i.path, verdicts[i.path][1], {"seed": str(i.seed), "image_type": i.image_type,
                                                     "cluster": str(i.seed)})
            for i in demo.items if i.expected == KEPT]
    quotas = [Quota("seed", "*", 4, 4), Quota("image_type", "original", SEEDS, 0), Quota("cluster", "*", 0, 8)]
    chosen = select(pool, 4 * SEEDS, quotas)
    assert len(chosen.selected_ids) == 4 * SEEDS
    assert all(chosen.counts[("seed", str(s))] == 4 for s in range(1, SEEDS + 1))
    assert chosen.counts[("image_type", "original")] >= SEEDS
    # without quotas the best 20 by quality are not balanced: the quotas do real work in the demo
    best = sorted(pool, key=lambda c: -c.quality)[:4 * SEEDS]
    per_seed = {s: sum(c.groups["seed"] == str(s) for c in best) for s in range(1, SEEDS + 1)}
    assert max(per_seed.values()) - min(per_seed.values()) >= 3


@pytest.mark.parametrize("seeds", [0, 6])
def test_seed_count_out_of_range_is_refused(tmp_path, seeds):
    with pytest.raises(InvalidArgument, match="seeds"):
        build_demo_set(tmp_path, seeds=seeds)


def test_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "holiday.png").write_bytes(b"not part of the set")
    with pytest.raises(InvalidArgument, match="out_dir"):
        build_demo_set(tmp_path, seeds=1)
    assert (tmp_path / "holiday.png").exists()
