"""Storyboard: one character over N frames. Identity comes from the reference image when the spec
gives one (also passed to IP-Adapter on every frame), else frame 1 establishes it; every frame is
validated (CLIP score >= threshold, exactly one face, identity similarity >= threshold) and a
failure is retried with the documented fix, within a retry budget:

  multiple faces -> guidance + GUIDANCE_STEP and a new seed
  no face        -> guidance - GUIDANCE_STEP and a new seed
  low CLIP score or low identity -> a new seed

Frame i tries seed + i first; attempt a of it uses seed + i + 7919 * a, so a rerun makes the same
attempts. A frame that fails every attempt fails the job unless `require_all_frames` is false; the
frames after it are then not attempted (the outcome is already decided)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from likeness.api.v1 import common_pb2, detection_pb2, embedding_pb2, generation_pb2, restoration_pb2
from likeness.core.errors import FailedPrecondition
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.workflows.common import cosine, stored_uri, uri_input, vector

GUIDANCE_STEP = 1.5
CONTROL_SCALE = 0.8  # ControlNet conditioning of frames on the face-landmark map
DEFAULT_GUIDANCE = 5.0
SEED_STRIDE = 7919
DEFAULT_REFERENCE_SCALE = 0.6


@dataclass
class Attempt:
    frame: int
    attempt: int
    seed: int
    guidance: float
    uri: str
    faces: int
    clip: float | None
    identity: float | None
    passed: bool
    failure: str
    fix: str = ""
    control: str = ""  # the face-landmark map this attempt was conditioned on, if any
    detected: list = field(default_factory=list, repr=False)  # its Detect faces (the landmark map reuses them)


def decide(faces: int, clip: float | None, identity: float | None, clip_min: float, id_min: float,
           eyes: float | None = None, eyes_min: float = 0.0) -> str:
    """The first failed check, or '' when the frame passes. `eyes`: the face's mean eye openness
    (None when not measured: the check is skipped); `eyes_min` 0 turns the check off."""
    if faces == 0:
        return "no_face"
    if faces > 1:
        return "multiple_faces"
    if eyes_min > 0 and eyes is not None and eyes < eyes_min:
        return "eyes_closed"
    if clip is not None and clip < clip_min:
        return "low_clip_score"
    if identity is not None and identity < id_min:
        return "low_identity"
    return ""


def next_try(failure: str, frame_seed: int, guidance: float, attempt: int) -> tuple[int, float, str]:
    """Seed and guidance of `attempt` (1, 2, ...) after `failure`; the seed is frame_seed + 7919 * attempt."""
    seed = frame_seed + SEED_STRIDE * attempt
    if failure == "multiple_faces":
        return seed, min(guidance + GUIDANCE_STEP, 30.0), f"guidance -> {min(guidance + GUIDANCE_STEP, 30.0):.1f}, new seed"
    if failure == "no_face":
        return seed, max(guidance - GUIDANCE_STEP, 1.0), f"guidance -> {max(guidance - GUIDANCE_STEP, 1.0):.1f}, new seed"
    return seed, guidance, "new seed"


async def landmark_control(ctx: JobContext, spec, image_uri: str, detected: list | None = None) -> str:
    """The face-landmark map of `image_uri` at the frames' size, or "" when it shows no face.
    `detected`: the image's faces when a Detect call already found them (no second call)."""
    if detected is None:
        det_req = detection_pb2.DetectRequest(images=[uri_input(image_uri)])
        det = await ctx.call("control-detect", ctx.clients.detection, "Detect", det_req, detection_pb2.DetectResponse)
        detected = list(det.results[0].faces)
    faces = [restoration_pb2.ControlFace(box=f.box, landmarks=f.landmarks) for f in detected]
    if not faces:
        await ctx.warn(f"no face in {image_uri}: frames are not conditioned on a face-landmark map", "control")
        return ""
    req = restoration_pb2.ControlImageRequest(
        kind=restoration_pb2.CONTROL_KIND_FACE_LANDMARKS, width=spec.width, height=spec.height,
        items=[restoration_pb2.ControlImageItem(image=uri_input(image_uri), faces=faces[:1])],
        output_prefix="storyboard/")
    resp = await ctx.call("control-image", ctx.clients.restoration, "ControlImage", req,
                          restoration_pb2.ControlImageResponse)
    return resp.results[0].image.uri


async def _attempt(ctx: JobContext, spec, frame: int, attempt: int, prompt: str, seed: int, guidance: float,
                   reference: np.ndarray | None, clip_min: float, id_min: float,
                   reference_uri: str = "", control: str = "") -> tuple[Attempt, np.ndarray | None]:
    req = generation_pb2.GenerateRequest(model=spec.model, prompt=prompt, negative_prompt=spec.negative_prompt,
                                         seed=seed, count=1, steps=spec.steps, guidance_scale=guidance,
                                         width=spec.width, height=spec.height, adapters=spec.adapters,
                                         output_prefix="storyboard/")
    if reference_uri:
        req.reference_image.CopyFrom(uri_input(reference_uri))
        req.reference_scale = spec.reference_scale if spec.HasField("reference_scale") else DEFAULT_REFERENCE_SCALE
    if control:
        scale = spec.control_scale if spec.HasField("control_scale") else CONTROL_SCALE
        req.controls.append(generation_pb2.ControlInput(image=uri_input(control), model=spec.control_model,
                                                         scale=scale))
    gen = await ctx.cached("generate", {"request": req.SerializeToString().hex()},
                           lambda: ctx.clients.generation.call("Generate", req), generation_pb2.GenerateResponse)
    art = gen.images[0].artifact
    det_req = detection_pb2.DetectRequest(images=[uri_input(art.uri)], with_embeddings=True)
    det = await ctx.cached("detect", {"image": art.sha256, "emb": True},
                           lambda: ctx.clients.detection.call("Detect", det_req), detection_pb2.DetectResponse)
    ctx.models.detection(det)
    faces = list(det.results[0].faces)
    clip = None
    if not spec.skip_clip_check:
        score_req = embedding_pb2.ScoreRequest(images=[uri_input(art.uri)], texts=[prompt])
        score = await ctx.cached("score", {"image": art.sha256, "text": prompt},
                                 lambda: ctx.clients.embedding.call("Score", score_req), embedding_pb2.ScoreResponse)
        ctx.models.embedding(score)
        clip = float(score.score[0])
    emb = vector(faces[0].embedding) if len(faces) == 1 and faces[0].embedding.values else None
    identity = cosine(emb, reference) if emb is not None and reference is not None else None
    eyes = None
    if len(faces) == 1 and faces[0].HasField("left_eye_openness") and faces[0].HasField("right_eye_openness"):
        eyes = (faces[0].left_eye_openness + faces[0].right_eye_openness) / 2
    eyes_min = spec.min_eye_openness if spec.HasField("min_eye_openness") else 0.0
    failure = decide(len(faces), clip, identity, clip_min, id_min, eyes, eyes_min)
    return Attempt(frame, attempt, seed, guidance, art.uri, len(faces), clip, identity, not failure, failure,
                   control=control, detected=faces), emb


async def _reference_identity(ctx: JobContext, image: common_pb2.ImageInput) -> tuple[str, np.ndarray]:
    """The reference image's store URI and the identity embedding of its one face."""
    uri = await stored_uri(ctx, image)
    req = detection_pb2.DetectRequest(images=[uri_input(uri)], with_embeddings=True)
    det = await ctx.cached("detect", {"image": uri, "emb": True}, lambda: ctx.clients.detection.call("Detect", req),
                           detection_pb2.DetectResponse)
    ctx.models.detection(det)
    r = det.results[0]
    if r.HasField("error") and r.error.code:
        raise FailedPrecondition("spec.storyboard.reference_image", r.error.message)
    if len(r.faces) != 1 or not r.faces[0].embedding.values:
        raise FailedPrecondition("spec.storyboard.reference_image",
                                 f"needs exactly one face with an identity embedding, found {len(r.faces)} faces")
    return uri, vector(r.faces[0].embedding)


@dataclass
class Settings:
    clip_min: float
    id_min: float
    budget: int
    require_all: bool
    reference_uri: str


def settings_of(spec) -> Settings:
    return Settings(spec.clip_threshold if spec.HasField("clip_threshold") else 0.70,
                    spec.identity_threshold if spec.HasField("identity_threshold") else 0.5,
                    spec.retry_budget if spec.HasField("retry_budget") else 3,
                    spec.require_all_frames if spec.HasField("require_all_frames") else True, "")


async def run(ctx: JobContext, spec) -> Outcome:
    cfg = settings_of(spec)
    base_guidance = spec.guidance_scale if spec.HasField("guidance_scale") else DEFAULT_GUIDANCE
    if spec.skip_clip_check:
        await ctx.warn("CLIP check skipped by the spec (skip_clip_check)", "validate")
    attempts: list[Attempt] = []
    frames: list[Attempt | None] = []
    ctx.partial = lambda: outcome(ctx, spec, cfg, frames, attempts, "")
    await ctx.models.generation_model(ctx.clients, spec.model)
    reference = None
    if spec.HasField("reference_image"):
        async with ctx.stage("reference"):
            cfg.reference_uri, reference = await _reference_identity(ctx, spec.reference_image)
    control = ""  # the face-landmark map frames are conditioned on (from control_reference or frame 1)
    if spec.control_model and spec.HasField("control_reference"):
        async with ctx.stage("control"):
            control = await landmark_control(ctx, spec, await stored_uri(ctx, spec.control_reference))
    total = len(spec.frame_prompts)
    failure = ""
    async with ctx.stage("frames"):
        for i, frame_prompt in enumerate(spec.frame_prompts):
            prompt = f"{spec.character}, {frame_prompt}" if spec.character else frame_prompt
            seed, guidance = spec.seed + i, base_guidance
            chosen = None
            for a in range(cfg.budget + 1):
                ctx.check_cancel()
                await ctx.progress("frames", i, total, f"frame {i + 1} attempt {a + 1}")
                att, emb = await _attempt(ctx, spec, i, a, prompt, seed, guidance, reference, cfg.clip_min, cfg.id_min,
                                          cfg.reference_uri, control)
                attempts.append(att)
                if att.passed:
                    chosen = att
                    if reference is None:
                        reference = emb  # no reference image: frame 1 establishes identity
                    if i == 0 and spec.control_model and not control:  # and, with a ControlNet, face geometry
                        control = await landmark_control(ctx, spec, att.uri, att.detected)
                    await ctx.item_done("frame", "passed", f"frame {i + 1} passed on attempt {a + 1}")
                    break
                if a < cfg.budget:
                    seed, guidance, att.fix = next_try(att.failure, spec.seed + i, guidance, a + 1)
                    await ctx.event("ITEM_DONE", f"frame {i + 1} attempt {a + 1} failed ({att.failure}); retry: {att.fix}",
                                    "frame")
            frames.append(chosen)
            await ctx.progress("frames", i + 1, total, f"frame {i + 1} {'passed' if chosen else 'failed'}")
            if chosen is None:
                await ctx.item_done("frame", "failed", f"frame {i + 1} failed after {cfg.budget + 1} attempts")
                await ctx.warn(f"frame {i + 1}: no attempt passed ({attempts[-1].failure})", "frame")
                if cfg.require_all:
                    failure = (f"frame {i + 1} of {total} failed all {cfg.budget + 1} attempts (last: "
                               f"{attempts[-1].failure}); require_all_frames is on, so the storyboard is incomplete"
                               + (f" and frames {i + 2}-{total} were not attempted" if i + 1 < total else ""))
                    break
    if reference is None and total:
        await ctx.warn("identity was never established (no reference image and no frame passed)", "frame")
    return outcome(ctx, spec, cfg, frames, attempts, failure)


def outcome(ctx: JobContext, spec, cfg: Settings, frames: list[Attempt | None], attempts: list[Attempt],
            failure: str) -> Outcome:
    total = len(spec.frame_prompts)
    passed = sum(1 for f in frames if f is not None)
    missing = [i + 1 for i in range(total) if i >= len(frames) or frames[i] is None]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    summary = {"frames": total, "frames_passed": passed, "attempts": len(attempts),
               "retries": len(attempts) - len(frames)}
    note = ""
    if missing:
        summary["frames_missing"] = ",".join(map(str, missing))
        if not failure:
            note = (f"{passed} of {total} frames passed; missing frames {summary['frames_missing']} "
                    "(require_all_frames is off)")
    status = lambda i: ("passed" if frames[i] else "failed") if i < len(frames) else "not attempted"  # noqa: E731
    done = lambda i: frames[i] if i < len(frames) else None  # noqa: E731
    manifest = {"frames": [{"frame": i, "status": status(i), "uri": done(i).uri if done(i) else "",
                            "seed": done(i).seed if done(i) else None, "control": done(i).control if done(i) else ""}
                           for i in range(total)],
                "attempts": [{"frame": a.frame, "attempt": a.attempt, "seed": a.seed, "guidance": a.guidance, "uri": a.uri,
                              "faces": a.faces, "clip_score": a.clip, "identity": a.identity, "failure": a.failure,
                              "control": a.control} for a in attempts],
                "settings": {"clip_threshold": cfg.clip_min, "identity_threshold": cfg.id_min, "retry_budget": cfg.budget,
                             "require_all_frames": cfg.require_all, "skip_clip_check": spec.skip_clip_check,
                             "reference_image": cfg.reference_uri}}
    models = ctx.models
    identity_source = "the reference image" if cfg.reference_uri else "frame 1"
    sections = [
        {"type": "gallery", "title": "Frames", "model": models.label("generator"),
         "groups": [{"name": f"frame {a.frame + 1}",
                     "items": [{"uri": x.uri, "caption": f"try {x.attempt + 1}: {'pass' if x.passed else x.failure}"}
                               for x in attempts if x.frame == a.frame]
                     + ([{"uri": a.control, "caption": "control: face-landmark map"}] if a.control else [])}
                    for a in attempts if a.attempt == 0]},
        {"type": "table", "title": "Attempts",
         "model": f"faces: {models.label('detector')}; identity: {models.label('identity')}; "
                  f"CLIP score: {models.label('encoder') if not spec.skip_clip_check else 'skipped'}",
         "columns": ["frame", "attempt", "seed", "guidance", "faces", "CLIP score", "identity", "result", "fix applied next"],
         "rows": [[a.frame + 1, a.attempt + 1, a.seed, f"{a.guidance:.1f}", a.faces, fmt(a.clip), fmt(a.identity),
                   "pass" if a.passed else a.failure, a.fix] for a in attempts]},
        {"type": "text", "title": "Thresholds",
         "body": f"CLIP score >= {cfg.clip_min:.2f}{' (skipped)' if spec.skip_clip_check else ''}; exactly one face; "
                 f"identity similarity to {identity_source} >= {cfg.id_min:.2f}; retry budget {cfg.budget} per frame; "
                 f"require_all_frames {'on' if cfg.require_all else 'off'}"
                 + (f"; eye openness >= {spec.min_eye_openness:.2f}" if spec.min_eye_openness else "") + "."},
    ]
    return Outcome(summary, manifest, {"sections": sections}, failure=failure, note=note)
