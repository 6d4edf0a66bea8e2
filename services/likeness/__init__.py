"""Likeness: gRPC services for face and character image work."""

__version__ = "0.1.0"
