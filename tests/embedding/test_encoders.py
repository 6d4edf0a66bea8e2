"""Encoders: the classical descriptor's invariances on real photos; open_clip loading its weights
from the model repository (tiny-clip, random weights), text tower, and clear failures."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from likeness.core.errors import FailedPrecondition, InvalidArgument, ModelMissing
from likeness.embedding.encoders.classical import ClassicalEncoder
from likeness.embedding.encoders.openclip import OpenClipEncoder
from tests import photos


def test_classical_vectors_are_unit_length_and_flip_invariant():
    enc = ClassicalEncoder()
    astronaut = photos.skimage_photo("astronaut")
    grey = photos.skimage_photo("camera")
    tiny = np.full((16, 16, 3), 128, dtype=np.uint8)
    v = enc.embed_images([astronaut, np.ascontiguousarray(astronaut[:, ::-1]), grey, tiny])
    assert v.shape == (4, enc.dimension) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(v[0], v[1], atol=1e-5)  # a mirror image is the same photo
    assert np.isfinite(v).all()  # flat and greyscale images too


def test_classical_brightness_and_blur_stay_closer_than_another_photo():
    import cv2

    enc = ClassicalEncoder()
    coffee, chelsea = photos.skimage_photo("coffee"), photos.skimage_photo("chelsea")
    brighter = np.clip(coffee.astype(np.float32) * 1.4, 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(coffee, (0, 0), 3)
    v = enc.embed_images([coffee, brighter, blurred, chelsea])
    sims = v @ v[0]
    assert sims[1] > sims[3] + 0.2 and sims[2] > sims[3] + 0.2


def test_classical_has_no_text_tower():
    with pytest.raises(FailedPrecondition, match="LIKENESS_EMBEDDING_ENCODER=open_clip"):
        ClassicalEncoder().embed_texts(["a cat"])


def test_open_clip_loads_the_repository_checkpoint(tiny_clip_repo):
    repo, _ = tiny_clip_repo
    enc = OpenClipEncoder(repo, "tiny-clip")
    enc.warmup()
    assert enc.name == "open_clip:likeness-tiny-clip" and enc.dimension == 32 and enc.random_weights
    saved = load_file(str(repo.fetch("tiny-clip") / "open_clip_model.safetensors"))
    loaded = {k: v.numpy() for k, v in enc._model.state_dict().items()}
    assert saved.keys() == loaded.keys()
    assert all(np.array_equal(saved[k], loaded[k]) for k in saved)  # the file's weights, not a fresh init
    images = enc.embed_images([photos.skimage_photo("astronaut"), photos.skimage_photo("camera")])
    texts = enc.embed_texts(["an astronaut", "a cameraman " * 100])  # long text: truncated to 77 tokens
    for v in (images, texts):
        assert v.shape == (2, 32)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.embed_texts(["an astronaut"])[0], texts[0], atol=1e-6)  # deterministic


def test_open_clip_bad_texts(tiny_clip_repo):
    enc = OpenClipEncoder(tiny_clip_repo[0], "tiny-clip")
    with pytest.raises(InvalidArgument, match=r"texts\[1\]: is empty"):
        enc.embed_texts(["ok", "  "])
    with pytest.raises(InvalidArgument, match=r"texts\[0\]: has 2,001 characters, over the limit of 2,000"):
        enc.embed_texts(["x" * 2001])


def test_open_clip_missing_model_names_the_path(tiny_clip_repo):
    repo, folder = tiny_clip_repo
    with pytest.raises(ModelMissing) as err:
        OpenClipEncoder(repo, "open-clip-vit-b-32").load()
    assert str(folder / "open-clip-vit-b-32" / "model.yaml") in err.value.message
