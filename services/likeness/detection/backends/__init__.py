"""Interchangeable face models behind two small interfaces (`base.py`); `create_backends` picks
them from settings. Heavy imports (ai-edge-litert, dlib, onnxruntime) happen inside each module."""
