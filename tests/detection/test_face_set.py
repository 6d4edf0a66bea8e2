"""The evaluation set of bench/faces.py: size, labels, and a held-out part made of other people."""

from __future__ import annotations

from collections import Counter

from bench.face_set import build


def test_set_is_large_labelled_and_split_by_person():
    items = build()
    assert len(items) >= 120 and len({i.name for i in items}) == len(items)
    parts = Counter(i.split for i in items)
    assert parts["tune"] >= 100 and parts["held_out"] >= 100
    people = {part: {i.name.split("/")[0] for i in items if i.split == part and i.kind != "group"}
              for part in ("tune", "held_out")}
    shared = people["tune"] & people["held_out"]
    assert shared == {"scene"}  # scene items share a prefix; their scenes differ (below)
    scenes = {part: {i.name for i in items if i.split == part and i.kind == "no_face"} for part in people}
    assert not scenes["tune"] & scenes["held_out"]
    kinds = Counter(i.kind for i in items)
    for kind in ("single", "blur", "contrast", "exposure", "mirror", "two_faces", "one_face_composite", "group",
                 "no_face", "small", "rotated", "cut", "turned"):
        assert kinds[kind] >= 2, kind
    scored = [i for i in items if not i.ambiguous]
    assert len(scored) >= 190 and {i.label for i in scored} >= {"kept", "blurred", "face_too_small", "no_face",
                                                                 "multiple_faces", "turned_away", "rejected"}
