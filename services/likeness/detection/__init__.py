"""Detection service: face detection, landmarks, head pose, identity embeddings, validation and
image quality. The domain modules here know nothing of gRPC; `servicer.py` is the thin gRPC face."""
