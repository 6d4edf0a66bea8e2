"""open_clip on its configured device and dtype: float16/bfloat16 run on this CPU, vectors come back
as float32 and stay close to the float32 model's (tiny-clip, random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from likeness.core.errors import FailedPrecondition
from likeness.embedding.app import create_service
from likeness.embedding.encoders.openclip import OpenClipEncoder
from likeness.embedding.settings import EmbeddingSettings


@pytest.fixture(scope="module")
def float32_vectors(tiny_clip_repo):
    enc = OpenClipEncoder(tiny_clip_repo[0], "tiny-clip")
    return _vectors(enc)


def _vectors(enc):
    images = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(3)]
    return enc.embed_images(images), enc.embed_texts(["a portrait", "two cats"])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_on_the_cpu(tiny_clip_repo, float32_vectors, dtype):
    enc = OpenClipEncoder(tiny_clip_repo[0], "tiny-clip", dtype=dtype)
    enc.load()
    assert {p.dtype for p in enc._model.parameters()} == {getattr(torch, dtype)}
    assert {p.device.type for p in enc._model.parameters()} == {"cpu"}
    for got, ref in zip(_vectors(enc), float32_vectors, strict=True):
        assert got.dtype == np.float32
        cosines = (got * ref).sum(axis=1)  # unit vectors
        assert cosines.min() > (0.999 if dtype == "float16" else 0.99), cosines


def test_device_and_dtype_are_named_in_the_description(tiny_clip_repo, tmp_path):
    repo, models = tiny_clip_repo
    settings = EmbeddingSettings(embedding_encoder="open_clip", embedding_open_clip_model="tiny-clip",
                                 model_repository=str(models), model_cache_dir=str(tmp_path / "cache"),
                                 store_uri=f"file://{tmp_path}/store", embedding_dtype="bfloat16")
    description = create_service(settings).description
    assert description["device"] == "cpu" and description["dtype"] == "bfloat16"


def test_a_missing_gpu_is_named(tiny_clip_repo):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(FailedPrecondition, match="LIKENESS_EMBEDDING_DEVICE"):
        OpenClipEncoder(tiny_clip_repo[0], "tiny-clip", device="cuda")
