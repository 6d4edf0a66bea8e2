"""The LoRA training loop: diffusers + peft on an SDXL or SD 1.5 pipeline, with exact resume.

Exact resume is designed in rather than hoped for. Existing trainers restore the optimizer but
draw noise, timesteps, caption shuffles and the data order from global RNG streams whose position
after a restart differs from an uninterrupted run. Here every random draw of optimizer step `s`
comes from generators seeded by (seed, s, micro-batch) and the epoch's order from (seed, epoch),
so the only things a resume needs are the LoRA weights, the optimizer and scheduler states and
the step counter. The full state file also carries the global torch/numpy/python RNG states and
the epoch's data order, restored on resume, so library code that draws from global RNGs stays
exact too. On CPU the resumed weights equal the uninterrupted ones bit for bit (tested).

Kept fixed (documented in docs/architecture/training.md): AdamW (betas 0.9/0.999, weight decay
1e-2, eps 1e-8), gradient clipping at norm 1.0, latents from the VAE posterior mean, cached once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from likeness.training.dataset import Dataset, assign_buckets, compose_caption, crop_to_bucket, plan_epoch
from likeness.training.distributed import Ranks
from likeness.training.spec import RunSpec

log = logging.getLogger("likeness.training.trainer")

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
STATE_FORMAT = 1
MAX_GRAD_NORM = 1.0
SAMPLE_BATCH = 4  # sample images per pipeline call


def derived_seed(*parts) -> int:
    """A 63-bit seed from any parts: independent streams per (run seed, step, micro-batch, use)."""
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class StepResult:
    step: int
    epoch: int
    loss: float
    lr: float
    epoch_end: bool


@dataclass
class CheckpointFiles:
    epoch: int
    step: int
    diffusers: Path
    kohya: Path
    state: Path


@dataclass
class Hooks:
    """How the loop talks to its caller (registry, store, cancel flag) without knowing them."""

    on_step: Callable[[StepResult], None] = lambda r: None
    should_stop: Callable[[], bool] = lambda: False
    on_epoch_end: Callable[[int, int, float], None] = lambda epoch, step, mean_loss: None


@dataclass
class Outcome:
    state: str  # "succeeded" or "cancelled"
    step: int
    epoch: int
    losses: list[float] = field(default_factory=list)


def resolve_device(local_rank: int = 0) -> str:
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


def resolve_precision(requested: str, device: str) -> str:
    """CPU trains in fp32 whatever was asked (half precision on CPU is slow and inexact)."""
    if device == "cpu":
        return "fp32"
    if requested == "auto":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


class LoraTrainer:
    def __init__(self, spec: RunSpec, pipe, kind: str, dataset: Dataset, *, device: str = "cpu",
                 run_id: str = "", gradient_checkpointing: bool = False, ranks: Ranks | None = None):
        import torch

        self.spec, self.pipe, self.kind, self.dataset = spec, pipe, kind, dataset
        self.ranks = ranks or Ranks()
        self.run_id = run_id
        self.gradient_checkpointing = gradient_checkpointing
        self.device = device
        self.precision = resolve_precision(spec.precision, device)
        self.weight_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        self.sdxl = kind.startswith("sdxl")
        self.buckets = assign_buckets(dataset.items, spec.resolution, spec.aspect_buckets)
        self.steps_per_epoch = len(self._plan(0))
        self.total_steps = spec.max_steps or spec.epochs * self.steps_per_epoch
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.step = 0  # optimizer steps done
        self._latents: dict[int, tuple] = {}
        self._text_cache: dict[str, tuple] = {}
        self._setup()

    # ---- setup ----------------------------------------------------------------------------

    def _text_encoders(self):
        return [te for te in (getattr(self.pipe, "text_encoder", None), getattr(self.pipe, "text_encoder_2", None))
                if te is not None]

    def _setup(self) -> None:
        import torch
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from peft import LoraConfig

        pipe = self.pipe
        for module in (pipe.unet, pipe.vae, *self._text_encoders()):
            module.requires_grad_(False)
            if self.device != "cpu":
                module.to(self.device)
        if self.weight_dtype != torch.float32:  # the VAE stays fp32: it overflows in fp16
            for module in (pipe.unet, *self._text_encoders()):
                module.to(dtype=self.weight_dtype)
        if self.gradient_checkpointing:  # recompute activations in backward: less memory, same result
            pipe.unet.enable_gradient_checkpointing()
        torch.manual_seed(derived_seed(self.spec.seed, "lora-init"))  # peft draws lora_A from it
        pipe.unet.add_adapter(LoraConfig(r=self.spec.rank, lora_alpha=self.spec.alpha,
                                         init_lora_weights="gaussian", target_modules=UNET_TARGETS))
        groups = [{"params": self._lora_params(pipe.unet), "lr": self.spec.unet_lr}]
        if self.spec.train_text_encoder:
            for te in self._text_encoders():
                te.add_adapter(LoraConfig(r=self.spec.rank, lora_alpha=self.spec.alpha,
                                          init_lora_weights="gaussian", target_modules=TEXT_TARGETS))
                groups.append({"params": self._lora_params(te), "lr": self.spec.text_encoder_lr})
        for g in groups:  # trainable LoRA weights stay fp32 under mixed precision
            for p in g["params"]:
                p.data = p.data.float()
        self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        self.lr_scheduler = get_scheduler(self.spec.lr_scheduler, self.optimizer,
                                          num_warmup_steps=self.spec.lr_warmup_steps,
                                          num_training_steps=self.total_steps)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    @staticmethod
    def _lora_params(module) -> list:
        return [p for n, p in module.named_parameters() if "lora_" in n and p.requires_grad]

    def _trainable(self) -> dict[str, object]:
        """Every trainable tensor by a stable name (component.parameter)."""
        out = {}
        for comp in ("unet", "text_encoder", "text_encoder_2"):
            module = getattr(self.pipe, comp, None)
            if module is None:
                continue
            for n, p in module.named_parameters():
                if p.requires_grad:
                    out[f"{comp}.{n}"] = p
        return out

    def _plan(self, epoch: int) -> list[list[list[int]]]:
        return plan_epoch(self.buckets, batch_size=self.spec.batch_size,
                          accumulation=self.spec.gradient_accumulation, seed=self.spec.seed, epoch=epoch)

    # ---- inputs ---------------------------------------------------------------------------

    def _latent(self, index: int):
        """(latents, original (h, w), crop (top, left), target (h, w)) of one item, cached."""
        import torch

        if index not in self._latents:
            item = self.dataset.items[index]
            w, h = self.buckets[index]
            crop, offset = crop_to_bucket(item.pixels, (w, h))
            x = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float().div(127.5).sub(1.0)  # writable copy
            with torch.no_grad():
                dist = self.pipe.vae.encode(x[None].to(self.device)).latent_dist
                latents = dist.mean * self.pipe.vae.config.scaling_factor
            self._latents[index] = (latents[0].to(self.weight_dtype), item.pixels.shape[:2], offset, (h, w))
        return self._latents[index]

    def _encode_prompts(self, captions: list[str]):
        """(encoder hidden states, pooled embeddings or None) for a batch of captions."""
        import torch

        frozen = not self.spec.train_text_encoder
        if frozen and all(c in self._text_cache for c in captions):
            parts = [self._text_cache[c] for c in captions]
            pooled = torch.stack([p[1] for p in parts]) if self.sdxl else None
            return torch.stack([p[0] for p in parts]), pooled
        tokenizers = [t for t in (self.pipe.tokenizer, getattr(self.pipe, "tokenizer_2", None)) if t is not None]
        hidden, pooled = [], None
        ctx = torch.no_grad() if frozen else contextlib.nullcontext()
        with ctx:
            for tok, te in zip(tokenizers, self._text_encoders(), strict=True):
                ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                          return_tensors="pt").input_ids.to(self.device)
                if self.sdxl:
                    out = te(ids, output_hidden_states=True)
                    hidden.append(out.hidden_states[-2])
                    pooled = out[0]  # the projection encoder's pooled output (text_embeds)
                else:
                    hidden.append(te(ids)[0])
        states = torch.cat(hidden, dim=-1)
        if frozen:
            for i, c in enumerate(captions):
                self._text_cache[c] = (states[i], pooled[i] if pooled is not None else None)
        return states, pooled

    # ---- one step -------------------------------------------------------------------------

    def _autocast(self):
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=self.weight_dtype)

    def _item_draws(self, index: int, step: int, micro: int, position: int, shape):
        """(caption, noise, timestep) of one item: seeded by its place in the global batch, so a
        rank sees the same draws as a single process training the whole batch."""
        import torch

        rng = random.Random(derived_seed(self.spec.seed, step, micro, position, "captions"))
        caption = compose_caption(self.dataset.items[index].caption, self.spec.trigger_token,
                                  shuffle=self.spec.shuffle_captions, dropout=self.spec.caption_dropout, rng=rng)
        gen = torch.Generator(device="cpu").manual_seed(derived_seed(self.spec.seed, step, micro, position, "noise"))
        noise = torch.randn(shape, generator=gen)
        timestep = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (1,), generator=gen)
        return caption, noise, timestep

    def _micro_batch_loss(self, shard: list[tuple[int, int]], step: int, micro: int, total: int):
        """This rank's items' share of the step's global mean loss (sum over items / `total`)."""
        import torch
        import torch.nn.functional as F

        cached = [self._latent(i) for _, i in shard]
        latents = torch.stack([c[0] for c in cached]).float()
        draws = [self._item_draws(i, step, micro, pos, latents.shape[1:]) for pos, i in shard]
        noise = torch.stack([d[1] for d in draws]).to(self.device)
        timesteps = torch.cat([d[2] for d in draws]).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        states, pooled = self._encode_prompts([d[0] for d in draws])
        kwargs = {}
        if self.sdxl:
            time_ids = torch.tensor([[*orig, *crop, *target] for _, orig, crop, target in cached],
                                    dtype=states.dtype, device=self.device)
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        with self._autocast():
            pred = self.pipe.unet(noisy.to(self.weight_dtype), timesteps, encoder_hidden_states=states,
                                  **kwargs, return_dict=False)[0]
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        per_item = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.spec.min_snr_gamma > 0:
            per_item = per_item * self._min_snr_weights(timesteps)
        return per_item.sum() / total

    def _min_snr_weights(self, timesteps):
        """Min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v."""
        import torch

        alphas = self.noise_scheduler.alphas_cumprod.to(self.device)[timesteps]
        snr = alphas / (1 - alphas)
        clipped = torch.minimum(snr, torch.full_like(snr, self.spec.min_snr_gamma))
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return clipped / snr

    def train_step(self, micro_batches: list[list[int]], epoch: int, position: int) -> StepResult:
        import torch

        step = self.step + 1
        self.pipe.unet.train()
        total, loss_sum = sum(len(b) for b in micro_batches), 0.0
        for micro, indices in enumerate(micro_batches):
            shard = self.ranks.shard(indices)
            if not shard:  # a micro-batch smaller than the world: this rank adds nothing to it
                continue
            loss = self._micro_batch_loss(shard, step, micro, total)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += float(loss.detach())
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.ranks.sum_gradients(params)  # once per optimizer step, after every micro-batch
        loss_sum = self.ranks.sum(loss_sum)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        lr = self.lr_scheduler.get_last_lr()[0]
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = step
        return StepResult(step, epoch, loss_sum, lr, position == self.steps_per_epoch - 1)

    def train(self, hooks: Hooks) -> Outcome:
        """Runs from `self.step` to the end, or until `hooks.should_stop()` (checked each step)."""
        losses: list[float] = []
        while self.step < self.total_steps:
            epoch, position = divmod(self.step, self.steps_per_epoch)
            plan = self._plan(epoch)
            epoch_losses = []
            for pos in range(position, len(plan)):
                if self.step >= self.total_steps:
                    break
                if self.ranks.main_decides(hooks.should_stop()):
                    return Outcome("cancelled", self.step, epoch + 1, losses)
                result = self.train_step(plan[pos], epoch + 1, pos)
                losses.append(result.loss)
                epoch_losses.append(result.loss)
                hooks.on_step(result)
            done_epoch = self.step % self.steps_per_epoch == 0 or self.step >= self.total_steps
            if done_epoch:
                mean = float(np.mean(epoch_losses)) if epoch_losses else math.nan
                hooks.on_epoch_end(epoch + 1, self.step, mean)
        return Outcome("succeeded", self.step, self.total_epochs, losses)

    @property
    def epoch(self) -> int:
        """Epochs begun (1-based) at the current step."""
        return max(1, math.ceil(self.step / self.steps_per_epoch))

    # ---- checkpoints ----------------------------------------------------------------------

    def lora_layers(self) -> dict[str, dict]:
        from likeness.diffusion.lora import peft_state_dict

        out = {"unet_layers": peft_state_dict(self.pipe.unet)}
        if self.spec.train_text_encoder:
            names = ["text_encoder_layers", "text_encoder_2_layers"]
            for name, te in zip(names, self._text_encoders(), strict=False):
                out[name] = peft_state_dict(te)
        return out

    def save_weights(self, path: Path, fmt: str, metadata: dict) -> Path:
        from likeness.diffusion.lora import save_lora

        return save_lora(path, **self.lora_layers(), fmt=fmt, alpha=self.spec.alpha, metadata=metadata,
                         family="sdxl" if self.sdxl else "sd15", unet_config=dict(self.pipe.unet.config),
                         title=self.spec.name or self.run_id, resolution=self.spec.resolution)

    def save_state(self, path: Path) -> Path:
        """Everything an exact resume needs (loaded with torch.load(weights_only=True))."""
        import torch

        np_state = np.random.get_state()
        py_state = random.getstate()
        epoch, position = divmod(self.step, self.steps_per_epoch)
        state = {
            "format": STATE_FORMAT,
            "run_id": self.run_id,
            "step": self.step,
            "total_steps": self.total_steps,
            "spec_digest": spec_digest(self.spec),
            "lora": {k: v.detach().cpu().clone() for k, v in self._trainable().items()},
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler else {},
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
                "python": [py_state[0], list(py_state[1]), py_state[2]],
            },
            # the epoch's order is a function of (seed, epoch); stored so a reader can check it
            "data_order": {"epoch": epoch, "position": position, "plan": self._plan(epoch)},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    def load_state(self, path: Path) -> int:
        """Restores a state written by `save_state` of a run with the same training settings."""
        import torch

        from likeness.core.errors import FailedPrecondition

        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise FailedPrecondition("resume_from_run_id", f"state format {state.get('format')} is not "
                                     f"{STATE_FORMAT}")
        if state["spec_digest"] != spec_digest(self.spec):
            raise FailedPrecondition("resume_from_run_id", "the saved state was trained with different "
                                     "settings; a resume must use the same spec (CompareRuns shows the difference)")
        params = self._trainable()
        if set(params) != set(state["lora"]):
            raise FailedPrecondition("resume_from_run_id", "the saved LoRA layers do not match this model")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["lora"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.scaler and state["grad_scaler"]:
            self.scaler.load_state_dict(state["grad_scaler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        n = rng["numpy"]
        np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
        p = rng["python"]
        random.setstate((p[0], tuple(p[1]), p[2]))
        self.step = int(state["step"])
        if state["data_order"]["plan"] != self._plan(state["data_order"]["epoch"]):
            raise FailedPrecondition("resume_from_run_id", "the dataset's order differs from the saved run's")
        return self.step

    # ---- samples --------------------------------------------------------------------------

    def sample(self, prompts: list[str], seeds: list[int], steps: int) -> list[list[np.ndarray]]:
        """Images[prompt][seed] from the current weights; global RNG states are left untouched."""
        import torch

        self.pipe.unet.eval()
        rows = []
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for prompt in prompts:
                text = ", ".join(p for p in (self.spec.trigger_token.strip(), prompt) if p)
                row = []
                for i in range(0, len(seeds), SAMPLE_BATCH):  # bounded batches: SDXL at 1024 px is big
                    chunk = seeds[i:i + SAMPLE_BATCH]
                    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in chunk]
                    out = self.pipe(prompt=[text] * len(chunk), generator=gens, num_inference_steps=steps,
                                    height=self.spec.resolution, width=self.spec.resolution, output_type="np")
                    row += [(np.clip(img, 0, 1) * 255).round().astype(np.uint8) for img in out.images]
                rows.append(row)
        self.pipe.unet.train()
        return rows


def spec_digest(spec: RunSpec) -> str:
    """Digest of the settings that shape the weights trajectory (what a resume must share)."""
    from likeness.core.workid import canonical_json

    keys = ("base_model", "trigger_token", "caption_dropout", "shuffle_captions", "aspect_buckets", "rank",
            "alpha", "unet_lr", "text_encoder_lr", "train_text_encoder", "batch_size", "gradient_accumulation",
            "epochs", "max_steps", "resolution", "seed", "lr_scheduler", "lr_warmup_steps", "min_snr_gamma")
    d = spec.to_dict()
    return hashlib.sha256(canonical_json({k: d[k] for k in keys})).hexdigest()


def grid_image(rows: list[list[np.ndarray]]) -> np.ndarray:
    """One image: a row per prompt, a column per seed."""
    return np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
