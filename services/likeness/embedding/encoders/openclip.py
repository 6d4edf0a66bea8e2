"""open_clip image and text encoder, weights from the model repository (never from a hub).

model.yaml of an open_clip model:

    kind: open_clip
    backend: open_clip
    files: [open_clip_model.safetensors]          # or open_clip_pytorch_model.bin, ...
    config:
      architecture: ViT-B-32                      # an open_clip architecture name
      checkpoint: open_clip_model.safetensors     # default: the first file
      config_file: likeness-tiny-clip.json        # optional: architecture config shipped with the
                                                  # model (file stem = architecture name)

Real CLIP weights (for example laion2b_s34b_b79k's `open_clip_model.safetensors`) are copied into
the repository by an operator; `tiny_clip.py` builds a toy model with random weights for tests.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from likeness.core.devices import dtype_name, require_device, torch_dtype
from likeness.core.errors import FailedPrecondition, InvalidArgument, ModelMissing
from likeness.embedding.encoders.base import Encoder

log = logging.getLogger(__name__)
MAX_TEXT_CHARS = 2_000


class OpenClipEncoder(Encoder):
    has_text = True

    def __init__(self, repository, model_name: str, *, threads: int = 0, batch_size: int = 16, device: str = "cpu",
                 dtype: str = "auto"):
        self._repository, self._model_name = repository, model_name
        self._threads, self._batch_size = threads, batch_size
        self.device = require_device(device, "LIKENESS_EMBEDDING_DEVICE")
        self._dtype = torch_dtype(dtype, self.device)
        self.dtype_name = dtype_name(self._dtype)
        self._lock = threading.Lock()
        self._model = self._preprocess = self._tokenizer = None
        self.name = f"open_clip:{model_name}"
        self.dimension = 0
        self.random_weights = False

    def load(self) -> None:
        """Fetches and loads the weights; ModelMissing names what is absent."""
        import open_clip
        import torch

        with self._lock:
            if self._model is not None:
                return
            folder = Path(self._repository.fetch(self._model_name))  # raises ModelMissing when absent
            spec = self._repository.spec(self._model_name)
            if spec.kind != "open_clip":
                raise FailedPrecondition("LIKENESS_EMBEDDING_OPEN_CLIP_MODEL",
                                         f"model '{spec.name}' is of kind '{spec.kind}', not 'open_clip'")
            config = spec.config
            architecture = config.get("architecture")
            if not architecture:
                raise FailedPrecondition("model", f"model '{spec.name}': model.yaml config has no 'architecture'")
            if config.get("config_file"):
                open_clip.add_model_config(folder / config["config_file"])
            checkpoint = folder / config.get("checkpoint", spec.files[0])
            if not checkpoint.is_file():
                raise ModelMissing(spec.name, str(checkpoint))
            if self._threads:  # 0 keeps torch's default (one per core)
                torch.set_num_threads(self._threads)
            model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=str(checkpoint))
            model.to(device=self.device, dtype=self._dtype).eval()
            self._tokenizer = open_clip.get_tokenizer(architecture)
            self._preprocess = preprocess
            self.name = f"open_clip:{architecture}"
            self.random_weights = bool(config.get("random_weights", False))
            self.stand_in = "random weights" if self.random_weights else ""
            self.digest = spec.digest
            with torch.no_grad():
                self.dimension = int(model.encode_text(self._tokenizer(["a"]).to(self.device)).shape[-1])
            self._model = model
            (log.warning if self.random_weights else log.info)(
                "open_clip model loaded" + (" (RANDOM WEIGHTS: vectors and scores are meaningless)"
                                            if self.random_weights else ""),
                extra={"model": spec.name, "architecture": architecture, "dimension": self.dimension,
                       "device": self.device, "dtype": self.dtype_name, "digest": spec.digest[:16],
                       "random_weights": self.random_weights})

    def _require_loaded(self):
        if self._model is None:
            self.load()
        return self._model

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        import torch
        from PIL import Image

        model = self._require_loaded()
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self._batch_size):
                chunk = images[start:start + self._batch_size]
                batch = torch.stack([self._preprocess(Image.fromarray(img)) for img in chunk])
                batch = batch.to(device=self.device, dtype=self._dtype)
                out.append(model.encode_image(batch, normalize=True).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dimension), dtype=np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidArgument(f"texts[{i}]", "is empty")
            if len(text) > MAX_TEXT_CHARS:
                raise InvalidArgument(f"texts[{i}]",
                                      f"has {len(text):,} characters, over the limit of {MAX_TEXT_CHARS:,}")
        model = self._require_loaded()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), 64):
                tokens = self._tokenizer(texts[start:start + 64]).to(self.device)  # truncated to 77 tokens
                out.append(model.encode_text(tokens, normalize=True).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dimension), dtype=np.float32)

    def warmup(self) -> None:
        self.load()
        self.embed_images([np.zeros((64, 64, 3), dtype=np.uint8)])
        self.embed_texts(["warm-up"])
