"""Score's 0-1 mapping of an image-text cosine similarity.

CLIP cosines of matching image-text pairs sit around 0.25-0.35 and of unrelated pairs around
0.10-0.20, so the raw cosine never reaches the 0.6-0.8 that users quote as "CLIP score" (the seed
accepts a storyboard frame at 0.70). Those figures use CLIPScore (Hessel et al. 2021):
w * max(cosine, 0) with w = 2.5. Clipped to [0, 1]:

    score = min(1, scale * max(cosine, 0)),   scale = LIKENESS_EMBEDDING_SCORE_SCALE (2.5)

so the seed's 0.70 threshold means a raw cosine of 0.28, and a score of 1 any cosine >= 0.4.
"""

from __future__ import annotations

import numpy as np


def score_from_cosine(cosine: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(scale * np.asarray(cosine, dtype=np.float64), 0.0, 1.0)


def cosine_for_score(score: float, scale: float) -> float:
    """The raw cosine a 0-1 threshold corresponds to (0.70 -> 0.28 at scale 2.5)."""
    return score / scale
