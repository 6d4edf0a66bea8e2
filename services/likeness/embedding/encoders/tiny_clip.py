"""tiny-clip: an open_clip model at toy size with random weights, for tests and demos.

It runs every code path of the open_clip encoder (model repository, checkpoint loading,
preprocessing, the real CLIP tokenizer, image and text towers), so `EmbedTexts` and `Score` can be
exercised with no downloaded weights. Its vectors mean NOTHING: never read its scores as image-text
agreement. model.yaml marks it `random_weights: true` and the service logs that at start-up.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

from likeness.core.errors import LikenessError

NAME = "tiny-clip"
ARCHITECTURE = "likeness-tiny-clip"
SEED = 20261122
CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
_lock = threading.Lock()


def ensure_tiny_clip(repo, name: str = NAME) -> Path:
    """Folder of the tiny model in `repo` (a core.modelrepo.ModelRepository), built and registered
    on first use; deterministic (fixed seed), so every run builds the same weights."""
    with _lock:
        try:
            return Path(repo.fetch(name))
        except LikenessError:
            pass
        with tempfile.TemporaryDirectory(prefix="tiny-clip-") as tmp:
            folder = Path(tmp)
            build_tiny_clip(folder)
            repo.register(name, folder, kind="open_clip", backend="open_clip", config={
                "architecture": ARCHITECTURE, "checkpoint": "open_clip_model.safetensors",
                "config_file": f"{ARCHITECTURE}.json", "random_weights": True, "seed": SEED,
                "note": "random weights; vectors and scores are meaningless, for tests only"})
        return Path(repo.fetch(name))


def build_tiny_clip(folder: Path) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{ARCHITECTURE}.json"
    config_path.write_text(json.dumps(CONFIG, indent=2, sort_keys=True))
    open_clip.add_model_config(config_path)
    torch.manual_seed(SEED)
    model = open_clip.create_model(ARCHITECTURE, pretrained=None)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
