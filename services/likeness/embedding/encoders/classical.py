"""`classical-v1`: the embedded-default image descriptor, needing no weights.

Built so that the same photo under the edits a curation pipeline meets (crops, rescaling,
brightness and contrast changes, blur, horizontal flips) maps to nearby vectors, while different
photos do not. Three blocks, each centred (its mean component removed: histograms and HOG are
non-negative, and without centring any two photos have cosine ~0.8) and L2-normalised, so they
weigh equally:

- colour (64): 8x8 histogram of the CIELAB chroma plane (a*, b*), soft-binned and square-rooted
  (Hellinger): ignores where things are, so it survives crops and flips; lightness is left out so
  brightness changes barely move it.
- layout (96): a 4x4 grid of mean L*, a*, b*, with L* standardised per image (brightness and
  contrast invariant); made flip-invariant by keeping the mirror-symmetric part (g + flip g) / 2 and
  the magnitude of the antisymmetric part |g - flip g| / 2.
- shape (324): HOG (9 orientations, 4x4 cells, 2x2 blocks, L2-Hys) of the standardised lightness
  at 64x64, summed with the HOG of the mirrored image (flip-invariant); the downscale to 64x64 by
  area averaging makes it insensitive to blur and scale.

It knows nothing of semantics (two different people in the same studio light look alike); for
meaning, use open_clip weights. Face geometry and pose are available from the detection service
and can be appended by a caller; this encoder sees only pixels.
"""

from __future__ import annotations

import numpy as np

from likeness.embedding.encoders.base import Encoder

_GRID = 4
_CHROMA_BINS = 8
_CHROMA_RANGE = 64.0  # |a*|, |b*| of natural photos mostly lie within +-64


class ClassicalEncoder(Encoder):
    name = "classical-v1"
    dimension = _CHROMA_BINS**2 + 3 * _GRID * _GRID * 2 + 324
    has_text = False
    stand_in = "classical features"  # colour, texture and gradient statistics, not a learned embedding

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([describe(img) for img in images]).astype(np.float32)


def describe(rgb: np.ndarray) -> np.ndarray:
    import cv2

    small = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # L in [0,100], a,b ~[-128,127]
    lightness = lab[..., 0]
    lightness = (lightness - lightness.mean()) / max(float(lightness.std()), 1.0)
    blocks = [_colour(lab[..., 1], lab[..., 2]), _layout(lightness, lab[..., 1], lab[..., 2]), _shape(lightness)]
    vector = np.concatenate([_unit(b - b.mean()) for b in blocks])
    return _unit(vector)


def _colour(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import cv2

    edges = np.linspace(-_CHROMA_RANGE, _CHROMA_RANGE, _CHROMA_BINS + 1)
    hist, _, _ = np.histogram2d(np.clip(a, -_CHROMA_RANGE, _CHROMA_RANGE - 1e-3).ravel(),
                                np.clip(b, -_CHROMA_RANGE, _CHROMA_RANGE - 1e-3).ravel(), bins=[edges, edges])
    hist = cv2.GaussianBlur(hist.astype(np.float32), (3, 3), 0.8)  # soft binning: small shifts stay close
    return np.sqrt(hist / max(hist.sum(), 1e-9)).ravel()


def _layout(lightness: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import cv2

    parts = []
    for channel, scale in ((lightness, 1.0), (a, 1.0 / 32.0), (b, 1.0 / 32.0)):
        grid = cv2.resize(channel, (_GRID, _GRID), interpolation=cv2.INTER_AREA) * scale
        mirrored = grid[:, ::-1]
        parts += [((grid + mirrored) / 2).ravel(), (np.abs(grid - mirrored) / 2).ravel()]
    return np.concatenate(parts)


def _shape(lightness: np.ndarray) -> np.ndarray:
    import cv2
    from skimage.feature import hog

    small = cv2.resize(lightness, (64, 64), interpolation=cv2.INTER_AREA)

    def h(img: np.ndarray) -> np.ndarray:
        return hog(img, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2),
                   block_norm="L2-Hys", feature_vector=True)

    return h(small) + h(np.ascontiguousarray(small[:, ::-1]))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)
