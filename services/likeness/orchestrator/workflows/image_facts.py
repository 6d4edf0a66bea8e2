"""What the curate job needs from a candidate's pixels besides the services' answers: its
perceptual hashes (duplicates.py) and its report thumbnail, from one read and one decode.

They are started as soon as a candidate's assessment is back, on one thread of their own, so they
run while the detection service assesses the next batches. Done afterwards, they sat on the job's
critical path twice: hashes between embedding and clustering, thumbnails after the last stage.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from likeness.orchestrator.report import thumbnail_of
from likeness.orchestrator.workflows.duplicates import Hashes, hashes_of

# One thread for all jobs: this work must not queue ahead of the job store's calls on the loop's
# default executor, and one core's worth is what it needs.
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="curate-image-facts")
KEY = "image_facts"  # where a Candidate keeps its task (Candidate.extra)


@dataclass(frozen=True)
class ImageFacts:
    hashes: Hashes
    thumbnail: str  # the report's data URI


def image_facts(data: bytes) -> ImageFacts:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return ImageFacts(hashes_of(im), thumbnail_of(im))


def start(store, candidates) -> None:
    """Starts the facts of each candidate (object with `uri` and an `extra` dict) not started yet."""
    loop = asyncio.get_running_loop()
    for c in candidates:
        if KEY not in c.extra:
            task = loop.run_in_executor(_POOL, lambda uri=c.uri: image_facts(store.get(uri)))
            # an image that cannot be read fails here and again where its facts are used (or the
            # report shows no thumbnail): the error is not lost, only not logged twice
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            c.extra[KEY] = task


async def facts(store, c) -> ImageFacts:
    """The candidate's facts, started now if they were not (a resumed job, a candidate never assessed)."""
    start(store, [c])
    return await c.extra[KEY]


def thumbnail(c) -> dict:
    """{"src": data URI} when the candidate's thumbnail is ready, else {} (the report makes one)."""
    task = c.extra.get(KEY)
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return {}
    return {"src": task.result().thumbnail}
