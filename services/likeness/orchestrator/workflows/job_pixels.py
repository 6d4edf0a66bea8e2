"""Decoded images of a running job, by store URI.

The open_eyes job decodes each variation's composite and restored image to count what restoration
changed, and its report shows the winner's again; at 1024 px a PNG decode costs ~10x the
measurement. Within a job a URI names one object (outputs are content- or work-addressed, or
written once under the job's prefix), so its pixels can be decoded once and shared until the job
ends. The arrays are read-only: a caller that wants to draw copies first.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from likeness.core.images import ImageLimits, decode_image
from likeness.core.memo import LruCache

# Decoded images kept per job: a face's variations (composite and restored) and the report's
# source, mask and winner; 3 MiB each at 1024 px.
MAX_IMAGES = 16

_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # JobContext -> LruCache
_lock = threading.Lock()


def _cache(ctx) -> LruCache:
    with _lock:
        cache = _caches.get(ctx)
        if cache is None:
            cache = _caches[ctx] = LruCache(MAX_IMAGES)
        return cache


def job_pixels(ctx, uri: str, limits: ImageLimits | None = None) -> np.ndarray:
    """HxWx3 uint8 pixels of the stored image `uri`, decoded at most once per job while cached."""
    cache = _cache(ctx)
    rgb = cache.get(uri)
    if rgb is None:
        rgb = decode_image(ctx.store.get(uri), "image", limits or ImageLimits())
        rgb.setflags(write=False)
        cache.put(uri, rgb)
    return rgb
