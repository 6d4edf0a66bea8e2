"""The embedded classical face restorer: no weights, runs anywhere, deterministic.

Three steps on the face crop, each chosen to be cheap (about 5 ms for a 320x320 crop on one core):
1. Edge-preserving denoising: two bilateral passes (5 px window, spatial sigma 2) whose range sigma
   follows the crop's own noise level, `4 sigma_n + 1` then `3 sigma_n + 1`, so a clean crop is
   barely smoothed and a noisy one is smoothed across flat skin but not across edges. `sigma_n` is
   Immerkaer's (1996) estimator: the mean absolute response to a Laplacian-difference kernel that
   cancels smooth structure, scaled by sqrt(pi/2)/6, per channel, median over channels.
2. Unsharp masking (Gaussian sigma 1.5 px) with amount `sharpen / (1 + (sigma_n / 6)^2)`: full
   strength on a clean but soft crop, little on a noisy one, where sharpening would bring back the
   noise the denoiser removed (a fixed amount lost 0.7 dB on a noisy 512 px portrait).
3. Local contrast (optional, amount `local_contrast`, default 0): a wide unsharp mask (sigma 10 px)
   that lifts mid-frequency contrast. It pleases the eye but moves pixels away from any clean
   original (PSNR drops by ~1.5 dB at 0.1), so it is off unless configured.
Then `fidelity` blends the result with the input (CodeFormer's w semantics; 1 returns the input).
tests/restoration/test_restorers.py measures the PSNR/SSIM gain on a degraded real photo.
"""

from __future__ import annotations

import cv2
import numpy as np

from likeness.restoration.restorers.base import FaceRestorer, blend_fidelity

SHARPEN_NOISE_REF = 6.0  # grey levels of noise at which unsharp masking runs at half strength
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_sigma(rgb: np.ndarray) -> float:
    """Estimated std of additive white noise, in grey levels (Immerkaer 1996)."""
    response = cv2.filter2D(rgb, cv2.CV_16S, _IMMERKAER)[1:-1, 1:-1]  # exact: |response| <= 16 * 255
    per_channel = cv2.mean(np.abs(response))[: rgb.shape[2]]
    return float(np.sqrt(np.pi / 2) * np.median(per_channel) / 6.0)


class ClassicalRestorer(FaceRestorer):
    name = "classical"
    input_size = None
    stand_in = "classical algorithm"  # denoise + sharpen, no learned face prior
    keeps_input_at_full_fidelity = True

    VERSION = 1  # bump when the algorithm's output changes

    def __init__(self, sharpen: float = 1.0, local_contrast: float = 0.0):
        self.sharpen = sharpen
        self.local_contrast = local_contrast
        self.identity = f"classical/{self.VERSION}:sharpen={sharpen:g}:local_contrast={local_contrast:g}"

    def load(self) -> None:  # nothing to load
        pass

    def describe(self) -> dict:
        return {"restorer": self.name, "sharpen": self.sharpen, "local_contrast": self.local_contrast}

    def enhance(self, face: np.ndarray) -> np.ndarray:
        """The full-strength restoration (fidelity 0)."""
        sigma = noise_sigma(face)
        smooth = cv2.bilateralFilter(face, 5, 4.0 * sigma + 1.0, 2.0)
        smooth = cv2.bilateralFilter(smooth, 5, 3.0 * sigma + 1.0, 2.0)
        amount = self.sharpen / (1.0 + (sigma / SHARPEN_NOISE_REF) ** 2)
        # addWeighted computes in float and rounds/saturates to uint8 once
        out = cv2.addWeighted(smooth, 1.0 + amount, cv2.GaussianBlur(smooth, (0, 0), 1.5), -amount, 0.0)
        if self.local_contrast > 0:
            wide = cv2.GaussianBlur(out, (0, 0), 10.0)
            out = cv2.addWeighted(out, 1.0 + self.local_contrast, wide, -self.local_contrast, 0.0)
        return out

    def restore(self, face: np.ndarray, fidelity: float) -> np.ndarray:
        if fidelity >= 1.0:
            return face.copy()
        return blend_fidelity(face, self.enhance(face), fidelity)
