"""The interface every encoder implements, a `ModelBackend` (load, warmup, describe): L2-normalised
image vectors, and text vectors where the encoder has a text tower."""

from __future__ import annotations

from abc import abstractmethod
from typing import Protocol

import numpy as np

from likeness.core.backend import ModelBackend
from likeness.core.errors import FailedPrecondition


class Encoder(ModelBackend, Protocol):
    name: str  # reported in responses, for example `classical-v1` or `open_clip:ViT-B-32`
    dimension: int
    has_text: bool = False
    # Provenance sent with every response: empty for trained weights, else what stands in for them
    # (`classical features`, `random weights`), so results built on a stand-in say so.
    stand_in: str = ""
    digest: str = ""  # content digest of the weights, from model.yaml

    @abstractmethod
    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        """HxWx3 uint8 RGB images -> (n, dimension) float32, each row of unit length."""

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(n, dimension) float32 unit rows in the image space; FAILED_PRECONDITION without a text tower."""
        raise self.no_text_tower()

    def load(self) -> None:
        """Encoders without weights have nothing to load."""

    def warmup(self) -> None:
        """One inference, so the first request does not pay for lazy initialisation."""
        self.embed_images([np.zeros((64, 64, 3), dtype=np.uint8)])

    def describe(self) -> dict:
        return {"encoder": self.name, "dimension": self.dimension, "has_text": self.has_text}

    def no_text_tower(self) -> FailedPrecondition:
        return FailedPrecondition(
            "encoder", f"the image encoder '{self.name}' has no text tower, so texts cannot be embedded or "
                       "scored; run the service with LIKENESS_EMBEDDING_ENCODER=open_clip and an open_clip "
                       "model in the model repository (LIKENESS_EMBEDDING_OPEN_CLIP_MODEL)")
