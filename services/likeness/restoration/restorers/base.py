"""The interface every face restorer implements.

`restore(face, fidelity)` takes an HxWx3 uint8 RGB face crop (at `input_size` x `input_size` for
networks, any size for the classical restorer) and returns one of the same shape. `fidelity` in
[0, 1]: 0 is the strongest restoration. CodeFormer takes it as its own `w` (the weight of the input
features fused into the decoder), so at 1 it still decodes through its codebook, as upstream does.
Restorers without a native fidelity control blend pixels, `out = fidelity * input + (1 - fidelity) *
restored`, so 1 keeps the input exactly; they say so with `keeps_input_at_full_fidelity`.
`load()` reads weights and raises `ModelMissing` naming the missing files; it never falls back.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np


class FaceRestorer(Protocol):
    name: str
    input_size: int | None  # square side the network expects; None = native resolution
    identity: str  # name + weights digest or parameters: part of every work id (set by load())
    keeps_input_at_full_fidelity: bool  # fidelity 1 returns the input: the caller may skip the work

    def load(self) -> None: ...

    def restore(self, face: np.ndarray, fidelity: float) -> np.ndarray: ...

    def describe(self) -> dict: ...


def blend_fidelity(face: np.ndarray, restored: np.ndarray, fidelity: float) -> np.ndarray:
    """`fidelity * face + (1 - fidelity) * restored`, rounded; exact `face` at fidelity 1."""
    if fidelity >= 1.0:
        return face.copy()
    if fidelity <= 0.0:
        return restored
    return cv2.addWeighted(face, fidelity, restored, 1.0 - fidelity, 0.0)  # float math, rounded once
