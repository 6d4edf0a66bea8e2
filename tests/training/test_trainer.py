"""The LoRA loop on tiny-sdxl and tiny-sd15: it learns, and resuming from a saved state ends
with the same weights as an uninterrupted run, bit for bit on CPU."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from likeness.diffusion.pipelines import load_pipeline
from likeness.training.dataset import Dataset, DatasetItem
from likeness.training.trainer import Hooks, LoraTrainer
from tests.training.conftest import CAPTIONS, PHOTOS, small_photo
from tests.training.factories import resolved_spec

SIZES = [(64, 48), (48, 64), (64, 64), (72, 40)]


def dataset(n=4) -> Dataset:
    items = tuple(DatasetItem(f"img_{i}.png", f"file:///d/img_{i}.png", small_photo(PHOTOS[i], SIZES[i]),
                              CAPTIONS[i], f"{i:064d}") for i in range(n))
    return Dataset("file:///d/", items, (), "d", "c")


_PRISTINE: dict = {}


def trainer(model_root, kind="sdxl", checkpointing=False, **spec_changes) -> LoraTrainer:
    """A trainer on a fresh copy of the tiny pipeline (copied, not reloaded: faster, same weights)."""
    name = {"sdxl": "tiny-sdxl", "sd15": "tiny-sd15"}[kind]
    if kind not in _PRISTINE:
        _PRISTINE[kind] = load_pipeline(model_root / name, kind)
    spec = resolved_spec("r", base_model=name, **spec_changes)
    pristine = _PRISTINE[kind]
    trained = {k: copy.deepcopy(v) for k, v in pristine.components.items() if k in ("unet", "text_encoder",
                                                                                   "text_encoder_2")}
    pipe = type(pristine)(**{**pristine.components, **trained})  # VAE and tokenizers are only read
    pipe.set_progress_bar_config(disable=True)
    return LoraTrainer(spec, pipe, kind, dataset(), gradient_checkpointing=checkpointing)


# Every source of randomness and state at once: caption dropout + shuffle, aspect buckets,
# text-encoder LoRA, min-SNR weighting, a warm-up + cosine schedule, one epoch of 4 steps so the
# interruption falls mid-epoch (the data order must be restored, not restarted).
RICH = dict(epochs=1, batch_size=1, caption_dropout=0.3, shuffle_captions=True, aspect_buckets=True,
            train_text_encoder=True, min_snr_gamma=5.0, lr_scheduler="cosine", lr_warmup_steps=1,
            unet_lr=1e-3, text_encoder_lr=1e-3, seed=11)


def weights(t: LoraTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t._trainable().items()}


@pytest.mark.slow
def test_resume_is_bit_identical_to_an_uninterrupted_run(model_root, tmp_path):
    straight = trainer(model_root, **RICH)
    assert straight.total_steps == 4
    losses = straight.train(Hooks()).losses
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)

    first = trainer(model_root, **RICH)
    stopped = first.train(Hooks(should_stop=lambda: first.step >= 2))
    assert (stopped.state, stopped.step) == ("cancelled", 2)
    state = first.save_state(tmp_path / "state.pt")

    resumed = trainer(model_root, **RICH)  # a fresh process would build exactly this
    assert resumed.load_state(state) == 2
    torch.manual_seed(12345)  # whatever the global RNGs did in between, load_state restored them
    assert resumed.train(Hooks()).losses == losses[2:]

    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and any(k.startswith("text_encoder") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert straight.lr_scheduler.get_last_lr() == resumed.lr_scheduler.get_last_lr()

    # the test can tell: restoring the weights alone (a fresh optimizer, as many trainers do) differs
    naive = trainer(model_root, **RICH)
    with torch.no_grad():
        for k, p in naive._trainable().items():
            p.copy_(weights(first)[k])
    naive.step = 2
    naive.train(Hooks())
    assert not all(torch.equal(a[k], v) for k, v in weights(naive).items())


def test_sd15_trains_and_the_lora_moves(model_root):
    t = trainer(model_root, "sd15", epochs=1, max_steps=2, unet_lr=1e-2, gradient_accumulation=2, batch_size=1)
    before = weights(t)
    out = t.train(Hooks())
    assert out.state == "succeeded" and out.step == 2 and all(math.isfinite(x) for x in out.losses)
    after = weights(t)
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)


def test_samples_leave_training_randomness_alone(model_root):
    t = trainer(model_root, epochs=1, max_steps=1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    rows = t.sample(["a portrait"], [1, 2], 2)
    assert torch.equal(torch.rand(3), expected)
    assert len(rows) == 1 and len(rows[0]) == 2 and rows[0][0].shape == (64, 64, 3)
    assert rows[0][0].dtype == np.uint8 and not np.array_equal(rows[0][0], rows[0][1])


def test_text_encoder_lora_saves_in_both_formats_and_loads(model_root, tmp_path):
    from likeness.diffusion.lora import load_into_pipeline, read_lora

    t = trainer(model_root, epochs=1, max_steps=1, train_text_encoder=True, text_encoder_lr=1e-2)
    t.train(Hooks())
    for fmt in ("diffusers", "kohya"):
        lora = read_lora(t.save_weights(tmp_path / f"{fmt}.safetensors", fmt, {"run": "r"}))
        assert lora.components == ("text_encoder", "text_encoder_2", "unet") and lora.rank == 4
        pipe = load_pipeline(model_root / "tiny-sdxl", "sdxl")
        load_into_pipeline(pipe, lora, "trained")
        assert set(pipe.get_list_adapters()) == {"unet", "text_encoder", "text_encoder_2"}


def test_gradient_checkpointing_gives_the_same_weights(model_root):
    plain, saving = trainer(model_root, max_steps=2), trainer(model_root, checkpointing=True, max_steps=2)
    plain.train(Hooks())
    saving.train(Hooks())
    assert saving.pipe.unet.is_gradient_checkpointing and not plain.pipe.unet.is_gradient_checkpointing
    a, b = weights(plain), weights(saving)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
