"""Near-duplicate detection for curation: a perceptual hash confirmed by embedding similarity.

- Perceptual hash: dHash of 64 bits (greyscale, resized to 9x8 by area averaging, one bit per
  horizontally adjacent pair: left brighter than right). Re-encoding, rescaling and mild
  brightness or contrast changes move a few bits; a different photo differs in ~32.
- A pair is a duplicate when its hashes are at most `HASH_EXACT` bits apart (the same picture), or
  at most `HASH_NEAR` bits apart AND its embeddings' cosine similarity is at least `MIN_COSINE`
  (a lightly edited copy). The hash alone would merge two different photos with the same layout;
  the embedding alone would merge every crop of one photo (the embedded encoder is built to map
  crops of a photo close together), which are distinct training images.
- Mirrors: the hash of the mirrored image is compared too unless mirrors are distinct by policy
  (a portrait and its mirror image teach a LoRA nothing new, and flip augmentation in training
  makes them the same sample).

Of each duplicate group the better-scored candidate (quality, then id) is kept; every other one is
named with the candidate it duplicates.

Thresholds were set on the demo set (the portrait and its mirror: 0-2 bits, cosine 1.00; the
closest distinct crops of one photo: >= 14 bits).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

HASH_EXACT = 4
HASH_NEAR = 10
MIN_COSINE = 0.97


@dataclass(frozen=True)
class Hashes:
    plain: int
    mirrored: int


def dhash_bits(grey: np.ndarray) -> int:
    """64-bit dHash of a 2-D uint8 array."""
    small = np.asarray(Image.fromarray(grey).resize((9, 8), Image.BOX), dtype=np.int16)
    bits = (small[:, :-1] > small[:, 1:]).ravel()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def image_hashes(data: bytes) -> Hashes:
    with Image.open(io.BytesIO(data)) as im:
        return hashes_of(im)


def hashes_of(im: Image.Image) -> Hashes:
    grey = np.asarray(im.convert("L"))
    return Hashes(dhash_bits(grey), dhash_bits(np.ascontiguousarray(grey[:, ::-1])))


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class Duplicate:
    id: str  # the removed candidate
    of: str  # the kept one it duplicates
    bits: int
    cosine: float
    mirrored: bool

    def detail(self) -> str:
        what = "mirror image" if self.mirrored else "near-duplicate"
        return f"{what} of {self.of} (hash {self.bits} bits apart, cosine {self.cosine:.3f})"


def find_duplicates(ids: list[str], quality: list[float], hashes: list[Hashes], vectors: list[np.ndarray],
                    mirrors_count: bool = True) -> list[Duplicate]:
    """Best-first greedy: each candidate is compared with the ones kept so far."""
    order = sorted(range(len(ids)), key=lambda i: (-quality[i], ids[i]))
    unit = [v / max(float(np.linalg.norm(v)), 1e-12) for v in (np.asarray(v, np.float64) for v in vectors)]
    kept: list[int] = []
    removed: list[Duplicate] = []
    for i in order:
        match = None
        for k in kept:
            cosine = float(unit[i] @ unit[k])
            options = [(distance(hashes[i].plain, hashes[k].plain), False)]
            if mirrors_count:
                options.append((distance(hashes[i].mirrored, hashes[k].plain), True))
            bits, mirrored = min(options)
            if bits <= HASH_EXACT or (bits <= HASH_NEAR and cosine >= MIN_COSINE):
                match = Duplicate(ids[i], ids[k], bits, cosine, mirrored)
                break
        if match:
            removed.append(match)
        else:
            kept.append(i)
    return removed
