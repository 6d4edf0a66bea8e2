"""Image (and text) encoders behind one interface; heavy imports stay inside each backend."""

from likeness.embedding.encoders.base import Encoder

__all__ = ["Encoder"]
