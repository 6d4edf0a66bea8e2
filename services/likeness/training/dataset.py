"""A training set from a store prefix: images with same-name `.txt` captions (the kohya convention).

`load_dataset` runs before any training work and either raises a clear InvalidArgument (no
images, images without captions under the FAIL policy, nothing usable left) or returns the usable
items plus a per-item record of what was left out and why (corrupt image, SKIP policy, unreadable
caption). Everything downstream is a pure function of the items and the seed:

- captions: `compose_caption` puts the trigger token first, optionally shuffles the remaining
  comma-separated tags and drops the whole caption with probability `caption_dropout`;
- buckets: `assign_buckets` gives every image a training size (one square bucket, or the
  aspect-ratio bucket of about the same area that distorts it least);
- order: `plan_epoch` groups an epoch into optimizer steps of micro-batches that share a bucket,
  shuffled by a generator seeded from (seed, epoch), so a resumed run replays the same order
  from nothing but its step counter.

Digests are taken over names relative to the prefix, so the same images and captions give the
same digests wherever they are stored (copies of one dataset in different folders compare equal).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from likeness.core.errors import InvalidArgument
from likeness.core.images import ImageLimits, decode_image
from likeness.training.registry.records import SkippedItem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGES = 10_000
MAX_CAPTION_CHARS = 4_000
MAX_LISTED = 5  # names shown in an error message


@dataclass(frozen=True)
class DatasetItem:
    name: str  # path relative to the dataset prefix, e.g. `lad_001.png`
    uri: str
    pixels: np.ndarray = field(repr=False)  # HxWx3 uint8 RGB
    caption: str  # the caption file's text ("" when trigger-only)
    sha256: str


@dataclass(frozen=True)
class Dataset:
    prefix: str
    items: tuple[DatasetItem, ...]
    skipped: tuple[SkippedItem, ...]
    dataset_digest: str
    captions_digest: str
    trigger_only: tuple[str, ...] = ()  # names trained on the trigger token alone (policy)

    def info(self) -> dict:
        return {"trigger_only": list(self.trigger_only), "image_count": len(self.items),
                "skipped_count": len(self.skipped)}


def _prefix_key(store, dataset_uri: str) -> str:
    raw = dataset_uri.strip().rstrip("/")
    if not raw:
        raise InvalidArgument("spec.dataset_uri", "is empty")
    key = store.key_of(raw, field="spec.dataset_uri")
    return key + "/"


def load_dataset(store, dataset_uri: str, *, policy: str = "fail", limits: ImageLimits | None = None,
                 max_images: int = MAX_IMAGES) -> Dataset:
    """Reads every image under the prefix with its caption; see the module docstring."""
    prefix = _prefix_key(store, dataset_uri)
    keys = store.list(prefix)
    # hidden files (.DS_Store, editor swap files) are not part of a dataset
    keys = [k for k in keys if not any(p.startswith(".") for p in PurePosixPath(k[len(prefix):]).parts)]
    images = sorted(k for k in keys if k.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise InvalidArgument("spec.dataset_uri", f"no images ({', '.join(IMAGE_SUFFIXES)}) under "
                              f"{store.uri(prefix.rstrip('/'))}/ ({len(keys)} other files)")
    if len(images) > max_images:
        raise InvalidArgument("spec.dataset_uri", f"{len(images)} images, over the limit of {max_images}")
    captions = {k[len(prefix):-len(".txt")]: k for k in keys if k.endswith(".txt")}

    def stem(key: str) -> str:
        return str(PurePosixPath(key[len(prefix):]).with_suffix(""))

    if policy == "fail":
        _require_captions([k for k in images if stem(k) not in captions], len(images), prefix)
    limits = limits or ImageLimits()
    items, skipped, trigger_only = [], [], []
    for key in images:
        name, uri = key[len(prefix):], store.uri(key)
        caption_key = captions.get(stem(key))
        if caption_key is None and policy == "skip":
            skipped.append(SkippedItem(uri, "no same-name .txt caption (policy SKIP)"))
            continue
        try:
            caption = _caption(store, caption_key, prefix)
            data = store.get(key)
            item = DatasetItem(name, uri, decode_image(data, name, limits), caption, hashlib.sha256(data).hexdigest())
        except _LeftOut as why:
            skipped.append(SkippedItem(uri, str(why)))
            continue
        except InvalidArgument as exc:
            skipped.append(SkippedItem(uri, f"corrupt image: {exc.detail}"))
            continue
        if not caption:
            trigger_only.append(name)
        items.append(item)
    if not items:
        reasons = "; ".join(f"{s.uri.rsplit('/', 1)[-1]}: {s.reason}" for s in skipped[:MAX_LISTED])
        raise InvalidArgument("spec.dataset_uri", f"no usable images: all {len(images)} were left out ({reasons})")
    return Dataset(
        prefix=store.uri(prefix.rstrip("/")) + "/", items=tuple(items), skipped=tuple(skipped),
        dataset_digest=_digest((i.name, i.sha256) for i in items),
        captions_digest=_digest((str(PurePosixPath(i.name).with_suffix("")), i.caption) for i in items),
        trigger_only=tuple(trigger_only))


def _require_captions(missing: list[str], total: int, prefix: str) -> None:
    if missing:
        shown = ", ".join(k[len(prefix):] for k in missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise InvalidArgument("spec.dataset_uri", f"{len(missing)} of {total} images have no same-name "
                              f".txt caption: {shown}{more} (missing_caption_policy FAIL; use TRIGGER_ONLY or "
                              "SKIP to train without them)")


class _LeftOut(Exception):
    """An item left out of the dataset, and why."""


def _caption(store, caption_key: str | None, prefix: str) -> str:
    """The item's caption ("" without a caption file)."""
    if caption_key is None:
        return ""
    try:
        caption = store.get(caption_key).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _LeftOut(f"caption {caption_key[len(prefix):]} is not UTF-8 text") from None
    if len(caption) > MAX_CAPTION_CHARS:
        raise _LeftOut(f"caption has {len(caption)} characters, over the limit of {MAX_CAPTION_CHARS}")
    return caption


def _digest(pairs) -> str:
    h = hashlib.sha256()
    for a, b in sorted(pairs):
        h.update(f"{a}\0{b}\n".encode())
    return h.hexdigest()


# ---- captions ---------------------------------------------------------------------------------

def compose_caption(caption: str, trigger: str, *, shuffle: bool, dropout: float, rng: random.Random) -> str:
    """Trigger token first, then the caption's tags (shuffled when asked); "" with p = dropout."""
    if dropout > 0 and rng.random() < dropout:
        return ""  # unconditional step: keeps classifier-free guidance working after fine-tuning
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    trigger = trigger.strip()
    if trigger:
        tags = [t for t in tags if t != trigger]  # the caption may already start with it
    if shuffle:
        rng.shuffle(tags)
    return ", ".join(([trigger] if trigger else []) + tags)


# ---- buckets and order ------------------------------------------------------------------------

def bucket_sizes(resolution: int, step: int) -> list[tuple[int, int]]:
    """(width, height) pairs, multiples of `step`, area <= resolution^2, aspect in [1/2, 2]."""
    area = resolution * resolution
    out = set()
    for w in range(step * max(1, resolution // (2 * step)), 2 * resolution + 1, step):
        h = min(area // w // step * step, 2 * w)
        if h >= step and 0.5 <= w / h <= 2.0:
            out.add((w, h))
            out.add((h, w))
    return sorted(out)


def assign_buckets(items, resolution: int, aspect_buckets: bool) -> list[tuple[int, int]]:
    """The (width, height) each item trains at: square, or the bucket closest in log aspect."""
    if not aspect_buckets:
        return [(resolution, resolution)] * len(items)
    step = 64 if resolution >= 512 else 8
    buckets = bucket_sizes(resolution, step)
    out = []
    for item in items:
        h, w = item.pixels.shape[:2]
        ratio = math.log(w / h)
        out.append(min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1])))
    return out


def plan_epoch(buckets: list[tuple[int, int]], *, batch_size: int, accumulation: int, seed: int,
               epoch: int) -> list[list[list[int]]]:
    """Optimizer steps of one epoch, each a list of micro-batches (item indices sharing a bucket).

    A pure function of its arguments (numpy PCG64 seeded from (seed, epoch)), so resuming at
    step k of an epoch replays exactly the order an uninterrupted run would have used.
    """
    rng = np.random.Generator(np.random.PCG64([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, epoch, 0x11CE]))
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for index in rng.permutation(len(buckets)).tolist():
        by_bucket.setdefault(buckets[index], []).append(index)
    batches = [idx[i:i + batch_size] for _, idx in sorted(by_bucket.items())
               for i in range(0, len(idx), batch_size)]
    batches = [batches[i] for i in rng.permutation(len(batches)).tolist()]
    return [batches[i:i + accumulation] for i in range(0, len(batches), accumulation)]


def steps_per_epoch(buckets: list[tuple[int, int]], batch_size: int, accumulation: int) -> int:
    return len(plan_epoch(buckets, batch_size=batch_size, accumulation=accumulation, seed=0, epoch=0))


def crop_to_bucket(pixels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Resizes to cover (width, height) and centre-crops; returns the crop and its (top, left)
    offset in the resized image (SDXL conditions on it)."""
    from PIL import Image

    w, h = size
    src_h, src_w = pixels.shape[:2]
    scale = max(w / src_w, h / src_h)
    new_w, new_h = max(w, round(src_w * scale)), max(h, round(src_h * scale))
    img = Image.fromarray(pixels).resize((new_w, new_h), Image.Resampling.LANCZOS)
    top, left = (new_h - h) // 2, (new_w - w) // 2
    return np.asarray(img)[top:top + h, left:left + w], (top, left)
