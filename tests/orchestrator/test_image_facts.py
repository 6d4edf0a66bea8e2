"""The curate job's hashes and thumbnails made once per image while assessment runs: the same
values as made from the stored bytes afterwards, and a report that uses them reads no image."""

import asyncio
from dataclasses import dataclass, field

import numpy as np

from likeness.core.images import encode_png
from likeness.orchestrator.report import render_report, thumbnail_data_uri
from likeness.orchestrator.workflows import image_facts
from likeness.orchestrator.workflows.duplicates import image_hashes


@dataclass
class Cand:
    uri: str
    extra: dict = field(default_factory=dict)


class CountingStore:
    def __init__(self, objects: dict[str, bytes]):
        self.objects, self.reads = objects, []

    def get(self, uri: str) -> bytes:
        self.reads.append(uri)
        return self.objects[uri]


def test_facts_equal_what_the_bytes_give_and_each_image_is_read_once():
    rng = np.random.default_rng(3)
    images = {f"mem://{i}.png": encode_png(rng.integers(0, 255, (90 + i, 120, 3), dtype=np.uint8)) for i in range(3)}
    store = CountingStore(images)
    cands = [Cand(uri) for uri in images]

    async def scenario():
        image_facts.start(store, cands)
        image_facts.start(store, cands)  # started once, not twice
        return [await image_facts.facts(store, c) for c in cands]

    got = asyncio.run(scenario())
    assert sorted(store.reads) == sorted(images)
    for c, f in zip(cands, got, strict=True):
        assert f.hashes == image_hashes(images[c.uri])
        assert f.thumbnail == thumbnail_data_uri(images[c.uri])
        assert image_facts.thumbnail(c) == {"src": f.thumbnail}
    assert image_facts.thumbnail(Cand("mem://never-started.png")) == {}


def test_a_report_with_ready_thumbnails_reads_no_image():
    from likeness.orchestrator.context import Outcome

    class Job:
        job_id, kind, state, attempts = "j1", "curate", "SUCCEEDED", 1

    store = CountingStore({})
    section = {"type": "gallery", "title": "g", "groups": [{"name": "n", "items": [
        {"uri": "mem://a.png", "caption": "a", "src": "data:image/jpeg;base64,AAAA"}]}]}
    html = render_report(Job(), Outcome({}, {}, {"sections": [section]}), {}, [], store)
    assert "data:image/jpeg;base64,AAAA" in html and store.reads == []
