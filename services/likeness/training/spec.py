"""The run spec as a domain object: defaults, limits and validation.

`resolve(spec)` fills every unset field with its documented default and checks every limit, so
the registry always records the values a run actually used, and bad input is rejected with a
message naming the field and the limit before any training work starts. Checks that need the
model repository or the dataset (unknown base model, empty dataset, missing captions, corrupt
images) live in `model_ref.py` and `dataset.py`; the service runs them all before a run is queued.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from likeness.core.errors import InvalidArgument, check_range, require

SCHEDULERS = ("constant", "cosine", "linear", "constant_with_warmup")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
EXECUTORS = ("default", "in_process", "kubernetes_job")
CAPTION_POLICIES = ("fail", "trigger_only", "skip")
MAX_SAMPLE_CELLS = 64


@dataclass(frozen=True)
class KubernetesSpec:
    gpus: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, str], ...] = ()
    image: str = ""
    memory: str = ""
    cpu: str = ""
    nodes: int = 1

    @property
    def world_size(self) -> int:
        """Training processes of the run: one per GPU on every node (one per node on CPUs)."""
        return max(self.gpus, 1) * max(self.nodes, 1)


@dataclass(frozen=True)
class RunSpec:
    """Zero / empty means "default" in a raw spec; after `resolve` every field holds its value."""

    name: str = ""
    base_model: str = ""
    dataset_uri: str = ""
    trigger_token: str = ""
    caption_dropout: float = 0.0
    shuffle_captions: bool = False
    aspect_buckets: bool = False
    rank: int = 0  # required: an implicit rank is how seed doc 004's runs went wrong
    alpha: float = 0.0  # 0 -> rank
    unet_lr: float = 1e-4
    text_encoder_lr: float = 5e-5
    train_text_encoder: bool = False
    batch_size: int = 1
    gradient_accumulation: int = 1
    epochs: int = 10
    max_steps: int = 0
    resolution: int = 0  # 0 -> the model's native size
    precision: str = "auto"
    seed: int = 0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    min_snr_gamma: float = 0.0
    checkpoint_every_epochs: int = 1
    sample_prompts: tuple[str, ...] = ()
    sample_seeds: tuple[int, ...] = ()
    sample_steps: int = 0  # 0 -> 20, or 4 for tiny models
    executor: str = "default"
    kubernetes: KubernetesSpec = field(default_factory=KubernetesSpec)
    missing_caption_policy: str = "fail"
    output_prefix: str = ""
    # Set by `resolve`: fields the caller left unset that took a default (CompareRuns shows them).
    defaulted: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        data = dict(data)
        k = dict(data.pop("kubernetes", {}) or {})
        k["tolerations"] = tuple(dict(t) for t in k.get("tolerations", ()))
        k["nodes"] = max(int(k.get("nodes", 1) or 1), 1)  # records before `nodes` existed: one node
        data["sample_prompts"] = tuple(data.get("sample_prompts", ()))
        data["sample_seeds"] = tuple(int(s) for s in data.get("sample_seeds", ()))
        data["defaulted"] = tuple(data.get("defaulted", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k2: v for k2, v in data.items() if k2 in known}, kubernetes=KubernetesSpec(**k))


DEFAULT_SAMPLE_PROMPTS = ("a portrait photo", "a full-body photo, outdoors")
DEFAULT_SAMPLE_SEEDS = (1, 2)


def resolve(spec: RunSpec, *, native_resolution: int, tiny_model: bool, default_executor: str,
            run_id: str) -> RunSpec:
    """Every default filled in and every limit checked; raises InvalidArgument naming the field."""
    validate_static(spec)
    unset = [f for f in ("name", "alpha", "resolution", "sample_prompts", "sample_seeds", "sample_steps",
                         "executor", "output_prefix") if getattr(spec, f) in (0, 0.0, "", (), "default")]
    return dataclasses.replace(
        spec,
        defaulted=tuple(dict.fromkeys((*spec.defaulted, *unset))),
        name=spec.name or run_id,
        alpha=spec.alpha or float(spec.rank),
        resolution=spec.resolution or native_resolution,
        sample_prompts=spec.sample_prompts or DEFAULT_SAMPLE_PROMPTS,
        sample_seeds=spec.sample_seeds or DEFAULT_SAMPLE_SEEDS,
        sample_steps=spec.sample_steps or (4 if tiny_model else 20),
        executor=default_executor if spec.executor == "default" else spec.executor,
        output_prefix=(spec.output_prefix or f"runs/{run_id}").rstrip("/"),
    )


def validate_static(spec: RunSpec) -> None:
    """Limits that need neither the model nor the dataset."""
    require(bool(spec.base_model.strip()), "spec.base_model", "is required, for example 'tiny-sdxl'")
    require(bool(spec.dataset_uri.strip()), "spec.dataset_uri",
            "is required: a store prefix holding images with same-name .txt captions")
    require(len(spec.name) <= 200, "spec.name", f"has {len(spec.name)} characters, over the limit of 200")
    require(len(spec.trigger_token) <= 200, "spec.trigger_token",
            f"has {len(spec.trigger_token)} characters, over the limit of 200")
    check_range(spec.caption_dropout, "spec.caption_dropout", 0.0, 0.999999)
    if not 1 <= spec.rank <= 256:
        raise InvalidArgument("spec.rank", f"{spec.rank} is outside [1, 256]; the LoRA rank is required "
                              "(it sets capacity and file size, so it is never left implicit)")
    if spec.alpha != 0:
        require(math.isfinite(spec.alpha) and spec.alpha > 0, "spec.alpha", f"{spec.alpha} must be > 0")
    _positive_lr(spec.unet_lr, "spec.unet_lr")
    _positive_lr(spec.text_encoder_lr, "spec.text_encoder_lr")
    _int_range(spec.batch_size, "spec.batch_size", 1, 64)
    _int_range(spec.gradient_accumulation, "spec.gradient_accumulation", 1, 64)
    _int_range(spec.epochs, "spec.epochs", 1, 1000)
    _int_range(spec.max_steps, "spec.max_steps", 0, 1_000_000)
    if spec.resolution:
        _int_range(spec.resolution, "spec.resolution", 64, 2048)
        require(spec.resolution % 8 == 0, "spec.resolution", f"{spec.resolution} is not a multiple of 8")
    require(spec.precision in PRECISIONS, "spec.precision", f"{spec.precision!r} is not one of {PRECISIONS}")
    require(spec.lr_scheduler in SCHEDULERS, "spec.lr_scheduler",
            f"{spec.lr_scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    _int_range(spec.lr_warmup_steps, "spec.lr_warmup_steps", 0, 100_000)
    check_range(spec.min_snr_gamma, "spec.min_snr_gamma", 0.0, 100.0)
    _int_range(spec.checkpoint_every_epochs, "spec.checkpoint_every_epochs", 1, 1000)
    cells = max(len(spec.sample_prompts), 1) * max(len(spec.sample_seeds), 1)
    require(cells <= MAX_SAMPLE_CELLS, "spec.sample_prompts",
            f"{len(spec.sample_prompts)} prompts x {len(spec.sample_seeds)} seeds = {cells} samples, "
            f"over the limit of {MAX_SAMPLE_CELLS}")
    for i, p in enumerate(spec.sample_prompts):
        require(0 < len(p) <= 1000, f"spec.sample_prompts[{i}]", "must have 1 to 1000 characters")
    _int_range(spec.sample_steps, "spec.sample_steps", 0, 200)
    require(spec.executor in EXECUTORS, "spec.executor", f"{spec.executor!r} is not one of {EXECUTORS}")
    require(spec.missing_caption_policy in CAPTION_POLICIES, "spec.missing_caption_policy",
            f"{spec.missing_caption_policy!r} is not one of {CAPTION_POLICIES}")
    _int_range(spec.kubernetes.gpus, "spec.kubernetes.gpus", 0, 8)
    _int_range(spec.kubernetes.nodes, "spec.kubernetes.nodes", 0, 16)
    for i, t in enumerate(spec.kubernetes.tolerations):
        op = t.get("operator") or "Equal"
        require(op in ("Equal", "Exists"), f"spec.kubernetes.tolerations[{i}].operator",
                f"{op!r} is not 'Equal' or 'Exists'")
        effect = t.get("effect", "")
        require(effect in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"),
                f"spec.kubernetes.tolerations[{i}].effect",
                f"{effect!r} is not NoSchedule, PreferNoSchedule or NoExecute")
    for name, value in (("memory", spec.kubernetes.memory), ("cpu", spec.kubernetes.cpu)):
        if value:
            _quantity(value, f"spec.kubernetes.{name}")


def _int_range(value: int, field_name: str, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidArgument(field_name, f"{value} is outside [{low}, {high}]")


def _positive_lr(value: float, field_name: str) -> None:
    if not (math.isfinite(value) and 0 < value <= 1.0):
        raise InvalidArgument(field_name, f"learning rate {value} must be > 0 and <= 1")


def _quantity(value: str, field_name: str) -> None:
    from kubernetes.utils.quantity import parse_quantity

    try:
        parse_quantity(value)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(field_name, f"{value!r} is not a Kubernetes quantity such as 24Gi or 4") from exc
