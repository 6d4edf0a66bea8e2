"""Validation of job specs at Submit: every field checked before a job is queued, with messages that
name the field and the limit. Checks that need the store (dataset exists) or a service (model
known) are made here too, so a job that cannot run is refused instead of failing later.

The defaults of optional fields live here too, beside the checks of the values a caller gives
(the `OPEN_EYES_*` constants, `inpaint_context_px`, `storyboard_plan`, `diversity_nearest_k`,
`curate_output_prefix`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from likeness.api.v1 import detection_pb2, generation_pb2, orchestrator_pb2
from likeness.core.errors import check_range, require
from likeness.core.uris import validate_prefix

KINDS = ("curate", "train", "storyboard", "open_eyes", "diversity")
QUOTA_DIMENSIONS = ("seed", "cluster", "image_type")


def job_kind(spec: orchestrator_pb2.JobSpec) -> str:
    kind = spec.WhichOneof("kind")
    require(kind is not None, "spec", f"one of {', '.join(KINDS)} must be set")
    return kind


def _count(value: int, field: str, low: int, high: int) -> None:
    require(low <= value <= high, field, f"{value} is outside [{low}, {high}]")


def _finite(value: float, field: str) -> None:
    require(math.isfinite(value), field, f"{value} is not a finite number")


def validate_curate(c: orchestrator_pb2.CurateSpec) -> None:
    source = c.WhichOneof("source")
    require(source is not None, "spec.curate.source", "set `generate` or `import_source`")
    _count(c.target_count, "spec.curate.target_count", 1, 10_000)
    require(c.top_k >= 0, "spec.curate.top_k", f"{c.top_k} is negative")
    require(c.top_k == 0 or c.top_k >= c.target_count, "spec.curate.top_k",
            f"{c.top_k} keeps fewer candidates than target_count {c.target_count}")
    require(0 <= c.clusters <= 100, "spec.curate.clusters", f"{c.clusters} is outside [0, 100]")
    check_range(c.min_quality, "spec.curate.min_quality", 0.0, 1.0)
    if c.policy.HasField("min_eye_openness"):
        check_range(c.policy.min_eye_openness, "spec.curate.policy.min_eye_openness", 0.0, 1.0)
    if c.policy.HasField("min_sharpness"):
        require(c.policy.min_sharpness >= 0, "spec.curate.policy.min_sharpness",
                f"{c.policy.min_sharpness} is negative")
    if source == "generate":
        _validate_generate_source(c)
    else:
        require(bool(c.import_source.uri), "spec.curate.import_source.uri", "is empty")
    validate_prefix(c.output_prefix, "spec.curate.output_prefix")  # no URI, no '..', no absolute path
    _validate_quotas(c, source)


def _validate_generate_source(c: orchestrator_pb2.CurateSpec) -> None:
    g = c.generate
    require(bool(g.model), "spec.curate.generate.model", "is empty")
    _count(len(g.seeds), "spec.curate.generate.seeds", 1, 1000)
    require(len(set(g.seeds)) == len(g.seeds), "spec.curate.generate.seeds", "contains duplicates")
    require(all(s >= 0 for s in g.seeds), "spec.curate.generate.seeds", "seeds must be >= 0")
    _count(len(g.scenarios), "spec.curate.generate.scenarios", 1, 100)
    names = [s.name for s in g.scenarios]
    require(all(names) and len(set(names)) == len(names), "spec.curate.generate.scenarios",
            "every scenario needs a unique, non-empty name")
    _count(g.variants or 1, "spec.curate.generate.variants", 1, 100)
    require(g.steps >= 0, "spec.curate.generate.steps", f"{g.steps} is negative")
    _finite(g.guidance_scale, "spec.curate.generate.guidance_scale")
    candidates = len(g.seeds) * len(g.scenarios) * (g.variants or 1)
    require(candidates <= 100_000, "spec.curate.generate", f"{candidates} candidates is over the limit of 100000")
    require(candidates >= c.target_count, "spec.curate.target_count",
            f"{c.target_count} is more than the {candidates} candidates the source generates")


def _validate_quotas(c: orchestrator_pb2.CurateSpec, source: str | None) -> None:
    mins = 0
    for i, q in enumerate(c.quotas):
        f = f"spec.curate.quotas[{i}]"
        require(q.dimension in QUOTA_DIMENSIONS, f + ".dimension",
                f"'{q.dimension}' is not one of {', '.join(QUOTA_DIMENSIONS)}")
        require(bool(q.group), f + ".group", "is empty (use '*' for every group)")
        require(q.min >= 0 and q.max >= 0, f, f"min {q.min} and max {q.max} must be >= 0")
        require(q.max == 0 or q.min <= q.max, f, f"min {q.min} is above max {q.max}")
        if q.group != "*":
            mins += q.min
        if source == "generate" and q.dimension == "seed" and q.group == "*" and q.max:
            cap = q.max * len(c.generate.seeds)
            require(cap >= c.target_count, f + ".max",
                    f"{q.max} per seed x {len(c.generate.seeds)} seeds = {cap} cannot reach target_count "
                    f"{c.target_count}")
        if source == "generate" and q.dimension == "seed" and q.group == "*" and q.min:
            need = q.min * len(c.generate.seeds)
            require(need <= c.target_count, f + ".min",
                    f"{q.min} per seed x {len(c.generate.seeds)} seeds = {need} is above target_count {c.target_count}")
    require(mins <= c.target_count, "spec.curate.quotas",
            f"minimums sum to {mins}, above target_count {c.target_count}")


def validate_train(t: orchestrator_pb2.TrainSpec) -> None:
    r = t.run
    require(bool(r.base_model), "spec.train.run.base_model", "is empty")
    require(bool(r.dataset_uri), "spec.train.run.dataset_uri", "is empty")
    _count(r.rank, "spec.train.run.rank", 1, 256)
    require(r.epochs >= 0 and r.max_steps >= 0, "spec.train.run", "epochs and max_steps must be >= 0")


def validate_storyboard(s: orchestrator_pb2.StoryboardSpec) -> None:
    require(bool(s.model), "spec.storyboard.model", "is empty")
    _count(len(s.frame_prompts), "spec.storyboard.frame_prompts", 1, 100)
    require(all(p.strip() for p in s.frame_prompts), "spec.storyboard.frame_prompts", "contains an empty prompt")
    if s.HasField("clip_threshold"):
        check_range(s.clip_threshold, "spec.storyboard.clip_threshold", 0.0, 1.0)
    if s.HasField("identity_threshold"):
        check_range(s.identity_threshold, "spec.storyboard.identity_threshold", -1.0, 1.0)
    if s.HasField("retry_budget"):
        _count(s.retry_budget, "spec.storyboard.retry_budget", 0, 20)
    if s.HasField("min_eye_openness"):
        check_range(s.min_eye_openness, "spec.storyboard.min_eye_openness", 0.0, 1.0)
    require(s.seed >= 0, "spec.storyboard.seed", f"{s.seed} is negative")
    if s.HasField("guidance_scale"):
        check_range(s.guidance_scale, "spec.storyboard.guidance_scale", 0.0, 30.0)
    if s.HasField("reference_image"):
        require(s.reference_image.WhichOneof("source") is not None, "spec.storyboard.reference_image",
                "set `data` or `uri`")
    if s.HasField("reference_scale"):
        require(s.HasField("reference_image"), "spec.storyboard.reference_scale", "needs reference_image")
        check_range(s.reference_scale, "spec.storyboard.reference_scale", 0.0, 1.0)
    if s.HasField("control_scale"):
        check_range(s.control_scale, "spec.storyboard.control_scale", 0.0, 2.0)
    require(len(s.control_model) <= 200, "spec.storyboard.control_model",
            f"has {len(s.control_model)} characters, over the limit of 200")
    if s.HasField("control_reference") or s.HasField("control_scale"):
        require(bool(s.control_model), "spec.storyboard.control_model",
                "is empty; control_reference and control_scale need a ControlNet model")


# open_eyes defaults: the inpainting prompt, the face-restoration fidelity, how far the eye
# mask reaches beyond the eyes (x the inter-ocular distance), and the most faces one job repairs.
OPEN_EYES_PROMPT = "open eyes, detailed iris, natural eyelids"
OPEN_EYES_FIDELITY = 0.7
OPEN_EYES_MASK_PADDING_IOD = 0.25
OPEN_EYES_MAX_FACES = 16


def validate_open_eyes(o: orchestrator_pb2.OpenEyesSpec) -> None:
    require(o.image.WhichOneof("source") is not None, "spec.open_eyes.image", "set `data` or `uri`")
    require(bool(o.model), "spec.open_eyes.model", "is empty")
    _count(o.variations or 1, "spec.open_eyes.variations", 1, 16)
    if o.HasField("strength"):
        require(0.0 < o.strength <= 1.0, "spec.open_eyes.strength", f"{o.strength} is outside (0, 1]")
    if o.HasField("fidelity"):
        check_range(o.fidelity, "spec.open_eyes.fidelity", 0.0, 1.0)
    require(o.seed >= 0, "spec.open_eyes.seed", f"{o.seed} is negative")
    require(len(o.prompt) <= 1000, "spec.open_eyes.prompt", f"has {len(o.prompt)} characters, over the limit of 1000")
    require(len(o.negative_prompt) <= 1000, "spec.open_eyes.negative_prompt",
            f"has {len(o.negative_prompt)} characters, over the limit of 1000")
    if o.HasField("face_index"):
        _count(o.face_index, "spec.open_eyes.face_index", 0, OPEN_EYES_MAX_FACES - 1)
    _count(o.steps, "spec.open_eyes.steps", 0, 200)


def validate_diversity(d: orchestrator_pb2.DiversitySpec) -> None:
    require(bool(d.model), "spec.diversity.model", "is empty")
    require(bool(d.reference_uri), "spec.diversity.reference_uri", "is empty")
    _count(len(d.settings), "spec.diversity.settings", 1, 50)
    names = [s.name for s in d.settings]
    require(all(names) and len(set(names)) == len(names), "spec.diversity.settings",
            "every setting needs a unique name")
    for i, s in enumerate(d.settings):
        _count(s.count, f"spec.diversity.settings[{i}].count", 2, 1000)
        require(s.seed_start >= 0, f"spec.diversity.settings[{i}].seed_start", f"{s.seed_start} is negative")
        check_range(s.noise_injection, f"spec.diversity.settings[{i}].noise_injection", 0.0, 1.0)
        require(s.sampler in generation_pb2.Sampler.values(), f"spec.diversity.settings[{i}].sampler",
                f"unknown enum value {s.sampler}")
        if s.HasField("guidance_scale"):
            check_range(s.guidance_scale, f"spec.diversity.settings[{i}].guidance_scale", 0.0, 30.0)
    require(d.nearest_k >= 0, "spec.diversity.nearest_k", f"{d.nearest_k} is negative")
    smallest = min(s.count for s in d.settings)
    require(d.nearest_k < smallest, "spec.diversity.nearest_k",
            f"{d.nearest_k} must be below the smallest setting count {smallest}")


VALIDATORS = {"curate": validate_curate, "train": validate_train, "storyboard": validate_storyboard,
              "open_eyes": validate_open_eyes, "diversity": validate_diversity}


def validate(spec: orchestrator_pb2.JobSpec) -> str:
    """Static checks; returns the job kind. Raises InvalidArgument naming the field."""
    kind = job_kind(spec)
    VALIDATORS[kind](getattr(spec, kind))
    return kind


def model_of(spec: orchestrator_pb2.JobSpec) -> tuple[str, str]:
    """(field, name) of the generation-repository model the job needs; ("", "") when none."""
    kind = spec.WhichOneof("kind")
    inner = getattr(spec, kind)
    if kind == "curate":
        if inner.WhichOneof("source") == "generate":
            return "spec.curate.generate.model", inner.generate.model
        return "", ""
    if kind == "train":
        return "spec.train.run.base_model", inner.run.base_model
    return f"spec.{kind}.model", inner.model


def dataset_of(spec: orchestrator_pb2.JobSpec) -> tuple[str, str]:
    """(field, uri) of a store prefix the job reads, to check that it exists at Submit."""
    kind = spec.WhichOneof("kind")
    if kind == "train":
        return "spec.train.run.dataset_uri", spec.train.run.dataset_uri
    if kind == "diversity":
        return "spec.diversity.reference_uri", spec.diversity.reference_uri
    if kind == "curate" and spec.curate.WhichOneof("source") == "import_source":
        return "spec.curate.import_source.uri", spec.curate.import_source.uri
    return "", ""


# -- defaults of optional fields -------------------------------------------------------------------

INPAINT_CONTEXT_FRACTION = 0.25  # open_eyes inpainting sees this fraction of the mask's crop side around it
STORYBOARD_CLIP_THRESHOLD = 0.70
STORYBOARD_IDENTITY_THRESHOLD = 0.5
STORYBOARD_RETRY_BUDGET = 3
STORYBOARD_GUIDANCE = 5.0
STORYBOARD_CONTROL_SCALE = 0.8
STORYBOARD_REFERENCE_SCALE = 0.6  # IP-Adapter conditioning of frames on the reference image
DIVERSITY_NEAREST_K = 5


def inpaint_context_px(crop_width: float, crop_height: float, minimum: int) -> int:
    """The crop padding of open_eyes' inpainting call for an eye mask of the given crop size."""
    return max(int(max(crop_width, crop_height) * INPAINT_CONTEXT_FRACTION), minimum)


@dataclass(frozen=True)
class StoryboardPlan:
    clip_min: float
    identity_min: float
    retry_budget: int
    guidance: float
    eyes_min: float  # 0: the eye-openness check is off
    control_scale: float  # ControlNet conditioning of frames on the face-landmark map
    reference_scale: float  # IP-Adapter conditioning of frames on the reference image
    require_all: bool  # a frame that fails every attempt fails the job


def storyboard_plan(s: orchestrator_pb2.StoryboardSpec) -> StoryboardPlan:
    return StoryboardPlan(
        clip_min=s.clip_threshold if s.HasField("clip_threshold") else STORYBOARD_CLIP_THRESHOLD,
        identity_min=s.identity_threshold if s.HasField("identity_threshold") else STORYBOARD_IDENTITY_THRESHOLD,
        retry_budget=s.retry_budget if s.HasField("retry_budget") else STORYBOARD_RETRY_BUDGET,
        guidance=s.guidance_scale if s.HasField("guidance_scale") else STORYBOARD_GUIDANCE,
        eyes_min=s.min_eye_openness if s.HasField("min_eye_openness") else 0.0,
        control_scale=s.control_scale if s.HasField("control_scale") else STORYBOARD_CONTROL_SCALE,
        reference_scale=s.reference_scale if s.HasField("reference_scale") else STORYBOARD_REFERENCE_SCALE,
        require_all=s.require_all_frames if s.HasField("require_all_frames") else True)


def diversity_nearest_k(d: orchestrator_pb2.DiversitySpec) -> int:
    return d.nearest_k or DIVERSITY_NEAREST_K


# Eye gate of curation when the spec's policy leaves min_eye_openness unset (mean openness of both
# eyes; synthetic shut eyes measure <= 0.03, open ones >= 0.95; bench/eyes.py).
CURATE_MIN_EYE_OPENNESS = 0.35


def curate_policy(c: orchestrator_pb2.CurateSpec) -> detection_pb2.ValidationPolicy:
    """The spec's policy with curation's defaults filled in (the eye gate on)."""
    policy = detection_pb2.ValidationPolicy()
    policy.CopyFrom(c.policy)
    if not policy.HasField("min_eye_openness"):
        policy.min_eye_openness = CURATE_MIN_EYE_OPENNESS
    return policy


def curate_output_prefix(c: orchestrator_pb2.CurateSpec, job_id: str) -> str:
    prefix = c.output_prefix or f"datasets/{job_id}/"
    return prefix if prefix.endswith("/") else prefix + "/"
