"""Interchangeable runtimes of the denoising loop: `torch` (default) and `onnxruntime`."""

from __future__ import annotations


def create_engine(settings):
    """The engine named by `LIKENESS_GENERATION_ENGINE`."""
    if settings.generation_engine == "onnxruntime":
        from likeness.generation.engines.onnx_engine import OnnxEngine

        return OnnxEngine(settings)
    from likeness.generation.engines.torch_engine import TorchEngine

    return TorchEngine(settings)
