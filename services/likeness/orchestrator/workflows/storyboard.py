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

from likeness.api.v1 import common_pb2, detection_pb2, embedding_pb2, generation_pb2, orchestrator_pb2, restoration_pb2
from likeness.core.errors import FailedPrecondition
from likeness.orchestrator import report
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.specs import StoryboardPlan, storyboard_plan
from likeness.orchestrator.workflows.common import cosine, stored_uri, uri_input, vector

GUIDANCE_STEP = 1.5
MAX_GUIDANCE, MIN_GUIDANCE = 30.0, 1.0
SEED_STRIDE = 7919


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
        guidance = min(guidance + GUIDANCE_STEP, MAX_GUIDANCE)
    elif failure == "no_face":
        guidance = max(guidance - GUIDANCE_STEP, MIN_GUIDANCE)
    else:
        return seed, guidance, "new seed"
    return seed, guidance, f"guidance -> {guidance:.1f}, new seed"


async def landmark_control(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec, image_uri: str,
                           detected: list | None = None) -> str:
    """The face-landmark map of `image_uri` at the frames' size, or "" when it shows no face.
    `detected`: the image's faces when a Detect call already found them (no second call)."""
    if detected is None:
        det_req = detection_pb2.DetectRequest(images=[uri_input(image_uri)])
        det = await ctx.call(ctx.clients.detection, "Detect", det_req, work="control-detect")
        detected = list(det.results[0].faces)
    faces = [restoration_pb2.ControlFace(box=f.box, landmarks=f.landmarks) for f in detected]
    if not faces:
        await ctx.warn(f"no face in {image_uri}: frames are not conditioned on a face-landmark map", "control")
        return ""
    req = restoration_pb2.ControlImageRequest(
        kind=restoration_pb2.CONTROL_KIND_FACE_LANDMARKS, width=spec.width, height=spec.height,
        items=[restoration_pb2.ControlImageItem(image=uri_input(image_uri), faces=faces[:1])],
        output_prefix="storyboard/")
    resp = await ctx.call(ctx.clients.restoration, "ControlImage", req, work="control-image")
    return resp.results[0].image.uri


@dataclass
class Board:
    """What the job has so far: each frame's passing attempt (None: it failed), every attempt, and
    the identity and face geometry the frames are checked against and conditioned on."""

    frames: list[Attempt | None] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    reference: np.ndarray | None = None  # identity embedding: the reference image's face, else frame 1's
    reference_uri: str = ""  # the reference image (IP-Adapter on every frame), if the spec gives one
    control: str = ""  # the face-landmark map frames are conditioned on (control_reference or frame 1)


def _generate_request(spec: orchestrator_pb2.StoryboardSpec, plan: StoryboardPlan, frame: Attempt, prompt: str,
                      reference_uri: str) -> generation_pb2.GenerateRequest:
    req = generation_pb2.GenerateRequest(model=spec.model, prompt=prompt, negative_prompt=spec.negative_prompt,
                                         seed=frame.seed, count=1, steps=spec.steps, guidance_scale=frame.guidance,
                                         width=spec.width, height=spec.height, adapters=spec.adapters,
                                         output_prefix="storyboard/")
    if reference_uri:
        req.reference_image.CopyFrom(uri_input(reference_uri))
        req.reference_scale = plan.reference_scale
    if frame.control:
        req.controls.append(generation_pb2.ControlInput(image=uri_input(frame.control), model=spec.control_model,
                                                         scale=plan.control_scale))
    return req


async def _attempt(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec, plan: StoryboardPlan, frame: Attempt,
                   prompt: str, board: Board) -> tuple[Attempt, np.ndarray | None]:
    """Generates `frame` (its frame, attempt, seed, guidance and control set), checks it; returns it
    filled in and the face's identity embedding (None unless exactly one face)."""
    req = _generate_request(spec, plan, frame, prompt, board.reference_uri)
    art = (await ctx.call(ctx.clients.generation, "Generate", req, work="generate")).images[0].artifact
    det = await ctx.call(ctx.clients.detection, "Detect",
                         detection_pb2.DetectRequest(images=[uri_input(art.uri)], with_embeddings=True),
                         work="detect", inputs={"image": art.sha256, "emb": True})
    ctx.models.detection(det)
    faces = list(det.results[0].faces)
    clip = None
    if not spec.skip_clip_check:
        score = await ctx.call(ctx.clients.embedding, "Score",
                               embedding_pb2.ScoreRequest(images=[uri_input(art.uri)], texts=[prompt]),
                               work="score", inputs={"image": art.sha256, "text": prompt})
        ctx.models.embedding(score)
        clip = float(score.score[0])
    emb = vector(faces[0].embedding) if len(faces) == 1 and faces[0].embedding.values else None
    identity = cosine(emb, board.reference) if emb is not None and board.reference is not None else None
    failure = decide(len(faces), clip, identity, plan.clip_min, plan.identity_min, _eye_openness(faces),
                     plan.eyes_min)
    frame.uri, frame.faces, frame.clip, frame.identity = art.uri, len(faces), clip, identity
    frame.passed, frame.failure, frame.detected = not failure, failure, faces
    return frame, emb


def _eye_openness(faces: list) -> float | None:
    """Mean openness of the single face's eyes; None when not measured (or not one face)."""
    if len(faces) == 1 and faces[0].HasField("left_eye_openness") and faces[0].HasField("right_eye_openness"):
        return (faces[0].left_eye_openness + faces[0].right_eye_openness) / 2
    return None


async def _frame(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec, plan: StoryboardPlan, i: int,
                 board: Board) -> tuple[Attempt | None, np.ndarray | None]:
    """Frame `i` within the retry budget: the passing attempt and its embedding, or (None, None)."""
    prompt = f"{spec.character}, {spec.frame_prompts[i]}" if spec.character else spec.frame_prompts[i]
    seed, guidance, total = spec.seed + i, plan.guidance, len(spec.frame_prompts)
    for a in range(plan.retry_budget + 1):
        ctx.check_cancel()
        await ctx.progress("frames", i, total, f"frame {i + 1} attempt {a + 1}")
        tried = Attempt(i, a, seed, guidance, uri="", faces=0, clip=None, identity=None, passed=False, failure="",
                        control=board.control)
        tried, emb = await _attempt(ctx, spec, plan, tried, prompt, board)
        board.attempts.append(tried)
        if tried.passed:
            return tried, emb
        if a < plan.retry_budget:
            seed, guidance, tried.fix = next_try(tried.failure, spec.seed + i, guidance, a + 1)
            await ctx.event("ITEM_DONE", f"frame {i + 1} attempt {a + 1} failed ({tried.failure}); retry: {tried.fix}",
                            "frame")
    return None, None


async def _reference_identity(ctx: JobContext, image: common_pb2.ImageInput) -> tuple[str, np.ndarray]:
    """The reference image's store URI and the identity embedding of its one face."""
    uri = await stored_uri(ctx, image)
    req = detection_pb2.DetectRequest(images=[uri_input(uri)], with_embeddings=True)
    det = await ctx.call(ctx.clients.detection, "Detect", req, work="detect", inputs={"image": uri, "emb": True})
    ctx.models.detection(det)
    r = det.results[0]
    if r.HasField("error") and r.error.code:
        raise FailedPrecondition("spec.storyboard.reference_image", r.error.message)
    if len(r.faces) != 1 or not r.faces[0].embedding.values:
        raise FailedPrecondition("spec.storyboard.reference_image",
                                 f"needs exactly one face with an identity embedding, found {len(r.faces)} faces")
    return uri, vector(r.faces[0].embedding)


async def _frames(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec, plan: StoryboardPlan, board: Board) -> str:
    """Every frame in order, into `board`; the failure that ends the job early, else ""."""
    total = len(spec.frame_prompts)
    for i in range(total):
        chosen, emb = await _frame(ctx, spec, plan, i, board)
        if chosen is not None:
            if board.reference is None:
                board.reference = emb  # no reference image: frame 1 establishes identity
            if i == 0 and spec.control_model and not board.control:  # and, with a ControlNet, face geometry
                board.control = await landmark_control(ctx, spec, chosen.uri, chosen.detected)
            await ctx.item_done("frame", "passed", f"frame {i + 1} passed on attempt {chosen.attempt + 1}")
        board.frames.append(chosen)
        await ctx.progress("frames", i + 1, total, f"frame {i + 1} {'passed' if chosen else 'failed'}")
        if chosen is None:
            last = board.attempts[-1].failure
            await ctx.item_done("frame", "failed", f"frame {i + 1} failed after {plan.retry_budget + 1} attempts")
            await ctx.warn(f"frame {i + 1}: no attempt passed ({last})", "frame")
            if plan.require_all:
                return (f"frame {i + 1} of {total} failed all {plan.retry_budget + 1} attempts (last: {last}); "
                        "require_all_frames is on, so the storyboard is incomplete"
                        + (f" and frames {i + 2}-{total} were not attempted" if i + 1 < total else ""))
    return ""


async def run(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec) -> Outcome:
    plan = storyboard_plan(spec)
    if spec.skip_clip_check:
        await ctx.warn("CLIP check skipped by the spec (skip_clip_check)", "validate")
    board = Board()
    ctx.partial = lambda: outcome(ctx, spec, plan, board, "")
    await ctx.models.generation_model(ctx.clients, spec.model)
    if spec.HasField("reference_image"):
        async with ctx.stage("reference"):
            board.reference_uri, board.reference = await _reference_identity(ctx, spec.reference_image)
    if spec.control_model and spec.HasField("control_reference"):
        async with ctx.stage("control"):
            board.control = await landmark_control(ctx, spec, await stored_uri(ctx, spec.control_reference))
    async with ctx.stage("frames"):
        failure = await _frames(ctx, spec, plan, board)
    if board.reference is None and spec.frame_prompts:
        await ctx.warn("identity was never established (no reference image and no frame passed)", "frame")
    return outcome(ctx, spec, plan, board, failure)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def outcome(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec, plan: StoryboardPlan, board: Board,
            failure: str) -> Outcome:
    """Summary, manifest and report of what `board` holds; frames after `board.frames` were not attempted."""
    total, frames, attempts = len(spec.frame_prompts), board.frames, board.attempts
    passed = sum(1 for f in frames if f is not None)
    missing = [i + 1 for i in range(total) if i >= len(frames) or frames[i] is None]
    summary = {"frames": total, "frames_passed": passed, "attempts": len(attempts),
               "retries": len(attempts) - len(frames)}
    note = ""
    if missing:
        summary["frames_missing"] = ",".join(map(str, missing))
        if not failure:
            note = (f"{passed} of {total} frames passed; missing frames {summary['frames_missing']} "
                    "(require_all_frames is off)")
    return Outcome(summary, _manifest(spec, plan, board), {"sections": _sections(ctx, spec, plan, board)},
                   failure=failure, note=note)


def _manifest(spec: orchestrator_pb2.StoryboardSpec, plan: StoryboardPlan, board: Board) -> dict:
    frames = board.frames

    def frame(i: int) -> dict:
        f = frames[i] if i < len(frames) else None
        status = ("passed" if f else "failed") if i < len(frames) else "not attempted"
        return {"frame": i, "status": status, "uri": f.uri if f else "", "seed": f.seed if f else None,
                "control": f.control if f else ""}

    return {"frames": [frame(i) for i in range(len(spec.frame_prompts))],
            "attempts": [{"frame": a.frame, "attempt": a.attempt, "seed": a.seed, "guidance": a.guidance,
                          "uri": a.uri, "faces": a.faces, "clip_score": a.clip, "identity": a.identity,
                          "failure": a.failure, "control": a.control} for a in board.attempts],
            "settings": {"clip_threshold": plan.clip_min, "identity_threshold": plan.identity_min,
                         "retry_budget": plan.retry_budget, "require_all_frames": plan.require_all,
                         "skip_clip_check": spec.skip_clip_check, "reference_image": board.reference_uri}}


def _sections(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec, plan: StoryboardPlan, board: Board) -> list:
    models, attempts = ctx.models, board.attempts
    identity_source = "the reference image" if board.reference_uri else "frame 1"
    eyes = f"; eye openness >= {plan.eyes_min:.2f}" if plan.eyes_min else ""
    return [
        report.gallery("Frames", [
            report.group(f"frame {a.frame + 1}", [
                report.image(x.uri, f"try {x.attempt + 1}: {'pass' if x.passed else x.failure}")
                for x in attempts if x.frame == a.frame]
                + ([report.image(a.control, "control: face-landmark map")] if a.control else []))
            for a in attempts if a.attempt == 0], model=models.label("generator")),
        report.table("Attempts", ["frame", "attempt", "seed", "guidance", "faces", "CLIP score", "identity", "result",
                                  "fix applied next"],
                     [[a.frame + 1, a.attempt + 1, a.seed, f"{a.guidance:.1f}", a.faces, _fmt(a.clip), _fmt(a.identity),
                       "pass" if a.passed else a.failure, a.fix] for a in attempts],
                     model=f"faces: {models.label('detector')}; identity: {models.label('identity')}; "
                           f"CLIP score: {models.label('encoder') if not spec.skip_clip_check else 'skipped'}"),
        report.text("Thresholds", f"CLIP score >= {plan.clip_min:.2f}{' (skipped)' if spec.skip_clip_check else ''}; "
                                  f"exactly one face; identity similarity to {identity_source} >= "
                                  f"{plan.identity_min:.2f}; retry budget {plan.retry_budget} per frame; "
                                  f"require_all_frames {'on' if plan.require_all else 'off'}{eyes}."),
    ]
