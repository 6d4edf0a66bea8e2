"""Scripted service clients for workflow tests: each answers from a small rule (faces per seed, a
CLIP score, ...) and records the requests it got, so a test can check what the workflow asked for
and what it made of the answers without model services."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from likeness.api.v1 import (
    common_pb2,
    detection_pb2,
    embedding_pb2,
    generation_pb2,
    orchestrator_pb2,
)
from likeness.core.images import encode_png
from likeness.core.settings import CommonSettings
from likeness.core.store import open_store
from likeness.orchestrator.clients import response_type
from likeness.orchestrator.jobstore import JobStore
from likeness.orchestrator.runner import Runner
from likeness.orchestrator.settings import OrchestratorSettings


class FakeClient:
    def __init__(self, name: str, handlers: dict):
        self.name, self.handlers = name, handlers
        self.requests: list[tuple[str, object]] = []

    def response_type(self, method: str) -> type:
        return response_type(self.name, method)

    async def call(self, method: str, request, *, timeout: float | None = None):
        self.requests.append((method, request))
        return self.handlers[method](request)

    def sent(self, method: str) -> list:
        return [r for m, r in self.requests if m == method]


def face(embedding: list[float], yaw: float = 0.0) -> common_pb2.Face:
    return common_pb2.Face(score=0.9, embedding=common_pb2.Vector(values=embedding), embedding_model="dlib-resnet-128",
                           pose=common_pb2.Pose(yaw=yaw))


@dataclass
class FakeServices:
    """`faces(seed)` -> faces of a generated image; `uploaded` maps store URIs of other images (inputs,
    references) to their faces. Generated images are tiny PNGs stored under `gen/<seed>.png`."""

    store: object
    faces: object = lambda seed: [face([1.0, 0.0])]  # noqa: E731
    clip_score: float = 0.9
    uploaded: dict = field(default_factory=dict)
    seeds_by_uri: dict = field(default_factory=dict)

    def __post_init__(self):
        self.generation = FakeClient("generation", {"Generate": self._generate, "ListModels": self._models})
        self.detection = FakeClient("detection", {"Detect": self._detect, "Assess": self._assess})
        self.embedding = FakeClient("embedding", {"Score": self._score, "EmbedImages": self._embed,
                                                  "Diversity": self._diversity})
        self.restoration = FakeClient("restoration", {})
        self.training = FakeClient("training", {})

    def _models(self, _req):
        return generation_pb2.ListModelsResponse(engine="torch", models=[
            generation_pb2.ModelInfo(name="tiny-sdxl", kind="sdxl", backend="diffusers", digest="d" * 64,
                                     stand_in="random weights")])

    def _generate(self, req):
        rgb = np.full((8, 8, 3), req.seed % 251, dtype=np.uint8)
        obj = self.store.put(f"gen/{req.seed}.png", encode_png(rgb), "image/png")
        self.seeds_by_uri[obj.uri] = req.seed
        return generation_pb2.GenerateResponse(images=[generation_pb2.GeneratedImage(
            artifact=common_pb2.Artifact(uri=obj.uri, sha256=obj.sha256), seed=req.seed)], model_digest="d" * 64)

    def _faces_of(self, uri: str) -> list:
        return self.uploaded[uri] if uri in self.uploaded else self.faces(self.seeds_by_uri[uri])

    def _detect(self, req):
        return detection_pb2.DetectResponse(backend="blazeface", results=[
            detection_pb2.DetectResult(index=i, faces=self._faces_of(im.uri), width=8, height=8)
            for i, im in enumerate(req.images)])

    def _assess(self, req):
        no_face = detection_pb2.Verdict(accepted=False, reason=detection_pb2.REJECTION_REASON_NO_FACE, detail="0 faces")
        return detection_pb2.AssessResponse(backend="blazeface", results=[
            detection_pb2.AssessResult(index=i, verdict=no_face) for i, _ in enumerate(req.images)])

    def _score(self, req):
        return embedding_pb2.ScoreResponse(score=[self.clip_score] * len(req.images), cosine=[0.5] * len(req.images),
                                           encoder="open_clip:tiny", stand_in="random weights")

    def _embed(self, req):
        rng = np.random.default_rng(len(req.images))
        return embedding_pb2.EmbedImagesResponse(
            embeddings=[common_pb2.Vector(values=rng.normal(size=4).tolist()) for _ in req.images],
            encoder="classical-v1", dimension=4, stand_in="classical features")

    def _diversity(self, req):
        m = embedding_pb2.MetricValue(value=0.5, ci_low=0.25, ci_high=0.75)
        return embedding_pb2.DiversityResponse(novelty=m, precision=m, recall=m, density=m, coverage=m,
                                               mean_pairwise_similarity=m, yaw_std=embedding_pb2.MetricValue(),
                                               pitch_std=embedding_pb2.MetricValue(),
                                               roll_std=embedding_pb2.MetricValue())

    async def close(self):
        pass


def open_test_store(tmp_path):
    return open_store(CommonSettings(store_uri=f"file://{tmp_path}/store"))


def run_job(tmp_path, spec: orchestrator_pb2.JobSpec, services: FakeServices):
    """Runs one job to its end on a runner whose service clients are `services`; returns the job record."""
    settings = OrchestratorSettings(orchestrator_database_url=f"sqlite:///{tmp_path}/jobs.db",
                                    store_uri=f"file://{tmp_path}/store", orchestrator_replica_id="test")
    jobs = JobStore(settings.orchestrator_database_url)
    try:
        job, _ = jobs.submit(spec.WhichOneof("kind"), spec.SerializeToString(), "")
        leased = jobs.lease_next("test", 60)
        runner = Runner(settings, jobs, services.store, services)
        asyncio.run(runner.run_job(leased))
        return jobs.get(job.job_id)
    finally:
        jobs.close()
