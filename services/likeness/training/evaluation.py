"""Evaluation of a checkpoint's sample grid, through the other services when they are reachable.

- CLIP score: the embedding service's `Score` of each sample against its prompt (without the
  trigger token, which no text encoder knows), using the calibrated `score` in [0, 1]; the mean
  over samples.
- Identity similarity: the detection service's `Detect` with identity embeddings, on the samples
  and (once per run) on the training images; per sample, the cosine between its most confident
  face and the normalised mean of the training faces; the mean over samples with a face.

When an address is not configured, the service is unreachable, or there is no face, the score is
NaN and `notes` says why: a missing measurement is never reported as a number.

Best checkpoint rule (`choose_best`): the highest identity similarity (rounded to 0.01, so noise
does not decide), then the highest CLIP score, then the later step; checkpoints without a
measurement rank below measured ones; when nothing was measured, the last checkpoint is best.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import numpy as np

from likeness.core.images import encode_png

MAX_REFERENCE_IMAGES = 16


@dataclass
class Evaluation:
    clip_score: float = math.nan
    identity_similarity: float = math.nan
    per_sample: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()}
                 for s in self.per_sample]
        return {"per_sample": clean, "notes": self.notes}


def _error_text(exc: Exception) -> str:
    import grpc

    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


class Evaluator:
    """Blocking facade (the training loop runs in a worker thread or a Job pod); each call runs
    its gRPC calls on a private event loop through `likeness.core.channels.aio_channel`."""

    def __init__(self, embedding_address: str = "", detection_address: str = "", *, settings=None,
                 timeout: float = 60.0):
        self.embedding_address, self.detection_address = embedding_address, detection_address
        self.settings, self.timeout = settings, timeout
        self._reference: np.ndarray | None = None
        self._reference_note = ""

    @classmethod
    def from_settings(cls, settings) -> Evaluator:
        return cls(settings.training_embedding_address, settings.training_detection_address,
                   settings=settings, timeout=settings.training_eval_timeout_seconds)

    def describe(self) -> dict:
        return {"embedding": self.embedding_address or "not configured",
                "detection": self.detection_address or "not configured"}

    # ---- public -------------------------------------------------------------------------------

    def set_reference(self, training_images: list[np.ndarray]) -> str:
        """Embeds the faces of (up to 16) training images once per run; returns a note or ""."""
        if not self.detection_address:
            self._reference_note = "identity similarity not measured: LIKENESS_TRAINING_DETECTION_ADDRESS is not set"
            return self._reference_note
        try:
            faces = asyncio.run(self._faces(training_images[:MAX_REFERENCE_IMAGES]))
        except Exception as exc:  # noqa: BLE001 - any failure of another service is a note, not a crash
            self._reference_note = f"identity similarity not measured: detection service failed ({_error_text(exc)})"
            return self._reference_note
        found = [f for f in faces if f is not None]
        if not found:
            self._reference_note = "identity similarity not measured: no face in the training images"
            return self._reference_note
        mean = np.mean(found, axis=0)
        self._reference = mean / (np.linalg.norm(mean) or 1.0)
        self._reference_note = ""
        return ""

    def evaluate(self, rows: list[list[np.ndarray]], prompts: list[str], seeds: list[int]) -> Evaluation:
        samples = [(p, s, img) for p, row in zip(prompts, rows, strict=True) for s, img in zip(seeds, row, strict=True)]
        ev = Evaluation(per_sample=[{"prompt": p, "seed": int(s), "clip_score": math.nan,
                                     "identity_similarity": math.nan} for p, s, _ in samples])
        images = [img for _, _, img in samples]
        self._clip(ev, images, [p for p, _, _ in samples])
        self._identity(ev, images)
        return ev

    # ---- measurements ---------------------------------------------------------------------

    def _clip(self, ev: Evaluation, images, texts) -> None:
        if not self.embedding_address:
            ev.notes.append("CLIP score not measured: LIKENESS_TRAINING_EMBEDDING_ADDRESS is not set")
            return
        try:
            scores = asyncio.run(self._score(images, texts))
        except Exception as exc:  # noqa: BLE001
            ev.notes.append(f"CLIP score not measured: embedding service failed ({_error_text(exc)})")
            return
        for sample, score in zip(ev.per_sample, scores, strict=True):
            sample["clip_score"] = score
        finite = [s for s in scores if math.isfinite(s)]
        ev.clip_score = float(np.mean(finite)) if finite else math.nan

    def _identity(self, ev: Evaluation, images) -> None:
        if self._reference is None:
            ev.notes.append(self._reference_note or "identity similarity not measured: no reference faces")
            return
        try:
            faces = asyncio.run(self._faces(images))
        except Exception as exc:  # noqa: BLE001
            ev.notes.append(f"identity similarity not measured: detection service failed ({_error_text(exc)})")
            return
        sims = []
        for sample, face in zip(ev.per_sample, faces, strict=True):
            if face is not None:
                sample["identity_similarity"] = float(np.dot(face, self._reference) / (np.linalg.norm(face) or 1.0))
                sims.append(sample["identity_similarity"])
        if sims:
            ev.identity_similarity = float(np.mean(sims))
        else:
            ev.notes.append(f"identity similarity not measured: no face in the {len(images)} samples")

    # ---- gRPC -----------------------------------------------------------------------------

    async def _score(self, images, texts) -> list[float]:
        from likeness.api.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc
        from likeness.core.channels import aio_channel

        request = embedding_pb2.ScoreRequest(
            images=[common_pb2.ImageInput(data=encode_png(img)) for img in images], texts=texts)
        async with aio_channel(self.embedding_address, self.settings) as channel:
            reply = await embedding_pb2_grpc.EmbeddingServiceStub(channel).Score(request, timeout=self.timeout)
        failed = {e.index for e in reply.errors}
        return [math.nan if i in failed else float(reply.score[i]) for i in range(len(images))]

    async def _faces(self, images) -> list[np.ndarray | None]:
        """The most confident face's identity embedding per image, or None."""
        from likeness.api.v1 import common_pb2, detection_pb2, detection_pb2_grpc
        from likeness.core.channels import aio_channel

        request = detection_pb2.DetectRequest(
            images=[common_pb2.ImageInput(data=encode_png(img)) for img in images], with_embeddings=True)
        async with aio_channel(self.detection_address, self.settings) as channel:
            reply = await detection_pb2_grpc.DetectionServiceStub(channel).Detect(request, timeout=self.timeout)
        out: list[np.ndarray | None] = [None] * len(images)
        for result in reply.results:
            faces = [f for f in result.faces if f.embedding.values]
            if not result.HasField("error") and faces:
                best = max(faces, key=lambda f: f.score)
                out[result.index] = np.asarray(best.embedding.values, dtype=np.float64)
        return out


def choose_best(scores: list[tuple[int, float, float]]) -> int:
    """Index of the best of (step, identity_similarity, clip_score) triples; see the module doc."""
    if not scores:
        raise ValueError("no checkpoints")

    def key(i: int):
        step, identity, clip = scores[i]
        return (round(identity, 2) if math.isfinite(identity) else -math.inf,
                clip if math.isfinite(clip) else -math.inf, step)

    return max(range(len(scores)), key=key)
