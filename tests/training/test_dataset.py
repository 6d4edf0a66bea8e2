"""Dataset loading (kohya convention), the missing-caption policies, corrupt images, digests,
captions, buckets and the data order."""

from __future__ import annotations

import random

import pytest

from likeness.core.errors import InvalidArgument
from likeness.training.dataset import (
    assign_buckets,
    bucket_sizes,
    compose_caption,
    crop_to_bucket,
    load_dataset,
    plan_epoch,
)
from tests.training.conftest import write_dataset


def test_images_pair_with_same_name_captions(tmp_store):
    write_dataset(tmp_store, "ds/a", 3)
    tmp_store.put("ds/a/.DS_Store", b"junk")
    tmp_store.put("ds/a/notes.md", b"not part of the set")
    ds = load_dataset(tmp_store, "ds/a/")
    assert [i.name for i in ds.items] == ["img_000.png", "img_001.png", "img_002.png"]
    assert ds.items[0].caption == "a woman in a space suit, smiling"
    assert ds.items[0].pixels.shape == (48, 64, 3) and ds.skipped == ()
    # the same prefix given as a URI, with or without the slash, is the same dataset
    assert load_dataset(tmp_store, tmp_store.uri("ds/a")).dataset_digest == ds.dataset_digest


def test_digests_ignore_location_and_see_caption_changes(tmp_store):
    write_dataset(tmp_store, "one", 2)
    write_dataset(tmp_store, "copies/two", 2)
    a, b = load_dataset(tmp_store, "one"), load_dataset(tmp_store, "copies/two")
    assert (a.dataset_digest, a.captions_digest) == (b.dataset_digest, b.captions_digest)
    tmp_store.put("copies/two/img_001.txt", b"a cup of tea")
    c = load_dataset(tmp_store, "copies/two")
    assert c.dataset_digest == a.dataset_digest and c.captions_digest != a.captions_digest


def test_empty_dataset_is_a_clear_error(tmp_store):
    with pytest.raises(InvalidArgument, match=r"spec.dataset_uri: no images \(.png"):
        load_dataset(tmp_store, "nothing/here")
    tmp_store.put("only-text/a.txt", b"caption without image")
    with pytest.raises(InvalidArgument, match=r"no images .*\(1 other files\)"):
        load_dataset(tmp_store, "only-text")


def test_missing_captions_policies(tmp_store):
    write_dataset(tmp_store, "ds", 3)
    tmp_store.delete("ds/img_001.txt")
    with pytest.raises(InvalidArgument) as info:
        load_dataset(tmp_store, "ds", policy="fail")
    assert "1 of 3 images have no same-name .txt caption: img_001.png" in str(info.value)
    assert "TRIGGER_ONLY or SKIP" in str(info.value)
    trig = load_dataset(tmp_store, "ds", policy="trigger_only")
    assert len(trig.items) == 3 and trig.trigger_only == ("img_001.png",) and trig.items[1].caption == ""
    skip = load_dataset(tmp_store, "ds", policy="skip")
    assert [i.name for i in skip.items] == ["img_000.png", "img_002.png"]
    assert skip.skipped[0].uri.endswith("ds/img_001.png") and "policy SKIP" in skip.skipped[0].reason


def test_corrupt_image_is_skipped_and_recorded(tmp_store):
    write_dataset(tmp_store, "ds", 2)
    png = tmp_store.get("ds/img_001.png")
    tmp_store.put("ds/img_001.png", png[: len(png) // 2])  # truncated
    tmp_store.put("ds/img_002.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    tmp_store.put("ds/img_002.txt", b"x")
    ds = load_dataset(tmp_store, "ds")
    assert [i.name for i in ds.items] == ["img_000.png"]
    reasons = {s.uri.rsplit("/", 1)[-1]: s.reason for s in ds.skipped}
    assert set(reasons) == {"img_001.png", "img_002.jpg"}
    assert all(r.startswith("corrupt image: ") for r in reasons.values())


def test_all_images_corrupt_is_an_error(tmp_store):
    tmp_store.put("bad/a.png", b"\x89PNG\r\n\x1a\n garbage")
    tmp_store.put("bad/a.txt", b"x")
    with pytest.raises(InvalidArgument, match="no usable images: all 1 were left out .*corrupt image"):
        load_dataset(tmp_store, "bad")


def test_compose_caption():
    rng = random.Random(0)
    assert compose_caption("a, b, c", "ohwx", shuffle=False, dropout=0, rng=rng) == "ohwx, a, b, c"
    assert compose_caption("ohwx, a", "ohwx", shuffle=False, dropout=0, rng=rng) == "ohwx, a"
    shuffled = {compose_caption("a, b, c, d", "ohwx", shuffle=True, dropout=0, rng=rng) for _ in range(20)}
    assert len(shuffled) > 1 and all(c.startswith("ohwx, ") for c in shuffled)
    dropped = [compose_caption("a", "t", shuffle=False, dropout=0.5, rng=rng) for _ in range(400)]
    assert 150 < dropped.count("") < 250


def test_buckets_and_crops():
    sizes = bucket_sizes(1024, 64)
    assert (1024, 1024) in sizes and all(w * h <= 1024 * 1024 and w % 64 == 0 == h % 64 for w, h in sizes)

    class Item:
        def __init__(self, h, w):
            import numpy as np
            self.pixels = np.zeros((h, w, 3), np.uint8)

    wide, tall, square = Item(512, 1024), Item(1024, 512), Item(700, 700)
    b = assign_buckets([wide, tall, square], 1024, True)
    assert b[0][0] > b[0][1] and b[1][0] < b[1][1] and b[2] == (1024, 1024)
    assert assign_buckets([wide], 64, False) == [(64, 64)]
    crop, (top, left) = crop_to_bucket(wide.pixels, (64, 64))
    assert crop.shape == (64, 64, 3) and top == 0 and left == 32


def test_epoch_plan_is_a_function_of_seed_and_epoch():
    buckets = [(64, 64)] * 5 + [(72, 56)] * 3
    plan = plan_epoch(buckets, batch_size=2, accumulation=2, seed=3, epoch=1)
    assert plan == plan_epoch(buckets, batch_size=2, accumulation=2, seed=3, epoch=1)
    assert plan != plan_epoch(buckets, batch_size=2, accumulation=2, seed=3, epoch=2)
    flat = [i for step in plan for batch in step for i in batch]
    assert sorted(flat) == list(range(8))  # every item once per epoch
    for step in plan:
        for batch in step:
            assert len({buckets[i] for i in batch}) == 1  # a batch never mixes buckets
