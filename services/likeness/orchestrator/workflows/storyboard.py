"""Storyboard: one character over N frames. Frame 1 establishes identity; every frame is
validated (CLIP score >= threshold, exactly one face, identity similarity to frame 1 >= threshold)
and a failure is retried with the documented fix, within a retry budget:

  multiple faces -> guidance + GUIDANCE_STEP and a new seed
  no face        -> guidance - GUIDANCE_STEP and a new seed
  low CLIP score or low identity -> a new seed

Seeds of retries are derived (seed + 7919 * attempt), so a rerun makes the same attempts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from likeness.api.v1 import detection_pb2, embedding_pb2, generation_pb2, orchestrator_pb2, restoration_pb2
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


def next_try(failure: str, seed: int, guidance: float, attempt: int) -> tuple[int, float, str]:
    seed = seed + SEED_STRIDE * attempt
    if failure == "multiple_faces":
        guidance = min(guidance + GUIDANCE_STEP, MAX_GUIDANCE)
    elif failure == "no_face":
        guidance = max(guidance - GUIDANCE_STEP, MIN_GUIDANCE)
    else:
        return seed, guidance, "new seed"
    return seed, guidance, f"guidance -> {guidance:.1f}, new seed"


async def landmark_control(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec, image_uri: str) -> str:
    """The face-landmark map of `image_uri` at the frames' size, or "" when it shows no face."""
    det_req = detection_pb2.DetectRequest(images=[uri_input(image_uri)])
    det = await ctx.call(ctx.clients.detection, "Detect", det_req, work="control-detect")
    faces = [restoration_pb2.ControlFace(box=f.box, landmarks=f.landmarks) for f in det.results[0].faces]
    if not faces:
        await ctx.warn(f"no face in {image_uri}: frames are not conditioned on a face-landmark map", "control")
        return ""
    req = restoration_pb2.ControlImageRequest(
        kind=restoration_pb2.CONTROL_KIND_FACE_LANDMARKS, width=spec.width, height=spec.height,
        items=[restoration_pb2.ControlImageItem(image=uri_input(image_uri), faces=faces[:1])],
        output_prefix="storyboard/")
    resp = await ctx.call(ctx.clients.restoration, "ControlImage", req, work="control-image")
    return resp.results[0].image.uri


async def _attempt(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec, plan: StoryboardPlan, frame: Attempt,
                   prompt: str, reference: np.ndarray | None) -> tuple[Attempt, np.ndarray | None]:
    """Generates `frame` (its frame, attempt, seed, guidance and control set), checks it; returns it
    filled in and the face's identity embedding (None unless exactly one face)."""
    req = generation_pb2.GenerateRequest(model=spec.model, prompt=prompt, negative_prompt=spec.negative_prompt,
                                         seed=frame.seed, count=1, steps=spec.steps, guidance_scale=frame.guidance,
                                         width=spec.width, height=spec.height, adapters=spec.adapters,
                                         output_prefix="storyboard/")
    if frame.control:
        req.controls.append(generation_pb2.ControlInput(image=uri_input(frame.control), model=spec.control_model,
                                                         scale=plan.control_scale))
    art = (await ctx.call(ctx.clients.generation, "Generate", req, work="generate")).images[0].artifact
    det = await ctx.call(ctx.clients.detection, "Detect",
                         detection_pb2.DetectRequest(images=[uri_input(art.uri)], with_embeddings=True),
                         work="detect", inputs={"image": art.sha256, "emb": True})
    faces = list(det.results[0].faces)
    clip = None
    if not spec.skip_clip_check:
        score = await ctx.call(ctx.clients.embedding, "Score",
                               embedding_pb2.ScoreRequest(images=[uri_input(art.uri)], texts=[prompt]),
                               work="score", inputs={"image": art.sha256, "text": prompt})
        clip = float(score.score[0])
    emb = vector(faces[0].embedding) if len(faces) == 1 and faces[0].embedding.values else None
    identity = cosine(emb, reference) if emb is not None and reference is not None else None
    failure = decide(len(faces), clip, identity, plan.clip_min, plan.identity_min, _eye_openness(faces),
                     plan.eyes_min)
    frame.uri, frame.faces, frame.clip, frame.identity = art.uri, len(faces), clip, identity
    frame.passed, frame.failure = not failure, failure
    return frame, emb


def _eye_openness(faces: list) -> float | None:
    """Mean openness of the single face's eyes; None when not measured (or not one face)."""
    if len(faces) == 1 and faces[0].HasField("left_eye_openness") and faces[0].HasField("right_eye_openness"):
        return (faces[0].left_eye_openness + faces[0].right_eye_openness) / 2
    return None


async def _frame(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec, plan: StoryboardPlan, i: int,
                 reference: np.ndarray | None, attempts: list[Attempt],
                 control: str) -> tuple[Attempt | None, np.ndarray | None]:
    """Frame `i` within the retry budget: the passing attempt and its embedding, or (None, None).
    `control`: the face-landmark map the frame is conditioned on ("" for none)."""
    prompt = f"{spec.character}, {spec.frame_prompts[i]}" if spec.character else spec.frame_prompts[i]
    seed, guidance = spec.seed + i, plan.guidance
    for a in range(plan.retry_budget + 1):
        ctx.check_cancel()
        tried = Attempt(i, a, seed, guidance, uri="", faces=0, clip=None, identity=None, passed=False, failure="",
                        control=control)
        tried, emb = await _attempt(ctx, spec, plan, tried, prompt, reference)
        attempts.append(tried)
        if tried.passed:
            await ctx.item_done("frame", "passed", f"frame {i + 1} passed on attempt {a + 1}")
            return tried, emb
        if a < plan.retry_budget:
            seed, guidance, tried.fix = next_try(tried.failure, seed, guidance, a + 1)
            await ctx.event("ITEM_DONE", f"frame {i + 1} attempt {a + 1} failed ({tried.failure}); retry: {tried.fix}",
                            "frame")
    await ctx.item_done("frame", "failed", f"frame {i + 1} failed after {plan.retry_budget + 1} attempts")
    await ctx.warn(f"frame {i + 1}: no attempt passed ({attempts[-1].failure})", "frame")
    return None, None


async def run(ctx: JobContext, spec: orchestrator_pb2.StoryboardSpec) -> Outcome:
    plan = storyboard_plan(spec)
    if spec.skip_clip_check:
        await ctx.warn("CLIP check skipped by the spec (skip_clip_check)", "validate")
    attempts: list[Attempt] = []
    frames: list[Attempt | None] = []
    reference = None
    control = ""  # the face-landmark map frames are conditioned on (from control_reference or frame 1)
    if spec.control_model and spec.HasField("control_reference"):
        async with ctx.stage("control"):
            control = await landmark_control(ctx, spec, await stored_uri(ctx, spec.control_reference))
    for i in range(len(spec.frame_prompts)):
        async with ctx.stage("frame"):
            chosen, emb = await _frame(ctx, spec, plan, i, reference, attempts, control)
            if i == 0 and chosen is not None:
                reference = emb  # frame 1 establishes identity
                if spec.control_model and not control:  # and, with a ControlNet, face geometry
                    control = await landmark_control(ctx, spec, chosen.uri)
        frames.append(chosen)
        await ctx.progress("frames", i + 1, len(spec.frame_prompts))
    if reference is None and spec.frame_prompts:
        await ctx.warn("frame 1 never passed, so identity could not be established", "frame")
    return _outcome(spec, plan, frames, attempts)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _outcome(spec: orchestrator_pb2.StoryboardSpec, plan: StoryboardPlan, frames: list[Attempt | None],
             attempts: list[Attempt]) -> Outcome:
    summary = {"frames": len(frames), "frames_passed": sum(1 for f in frames if f is not None),
               "attempts": len(attempts), "retries": len(attempts) - len(frames)}
    manifest = {"frames": [{"frame": i, "uri": f.uri if f else "", "seed": f.seed if f else None,
                            "control": f.control if f else ""} for i, f in enumerate(frames)],
                "attempts": [{"frame": a.frame, "attempt": a.attempt, "seed": a.seed, "guidance": a.guidance,
                              "uri": a.uri, "failure": a.failure, "control": a.control} for a in attempts]}
    skipped = " (skipped)" if spec.skip_clip_check else ""
    sections = [
        report.gallery("Frames", [
            report.group(f"frame {a.frame + 1}", [
                report.image(x.uri, f"try {x.attempt + 1}: {'pass' if x.passed else x.failure}")
                for x in attempts if x.frame == a.frame]
                + ([report.image(a.control, "control: face-landmark map")] if a.control else []))
            for a in attempts if a.attempt == 0]),
        report.table("Attempts", ["frame", "attempt", "seed", "guidance", "faces", "CLIP score", "identity", "result",
                                  "fix applied next"],
                     [[a.frame + 1, a.attempt + 1, a.seed, f"{a.guidance:.1f}", a.faces, _fmt(a.clip), _fmt(a.identity),
                       "pass" if a.passed else a.failure, a.fix] for a in attempts]),
        report.text("Thresholds", f"CLIP score >= {plan.clip_min:.2f}{skipped}; exactly one face; identity "
                                  f"similarity to frame 1 >= {plan.identity_min:.2f}; retry budget "
                                  f"{plan.retry_budget} per frame."),
    ]
    return Outcome(summary, manifest, {"sections": sections})
