"""Which models produced a job's numbers: every workflow records the model behind each service answer
it uses (name, backend, digest, and whether it is a stand-in: random weights, classical features),
the runner writes them into the manifest's `models` section and the report, and a report built on
a stand-in says so at the top in plain words."""

from __future__ import annotations

import logging

from likeness.api.v1 import generation_pb2

log = logging.getLogger("likeness.orchestrator.provenance")

# What a stand-in means for the figures built on it, by role and kind of stand-in.
CONSEQUENCES = {
    ("generator", "random weights"): "random weights: these images are noise; validation figures on them mean nothing",
    ("base model", "random weights"): "random weights: the adapter trains on noise-making weights; its samples and "
                                      "evaluation figures mean nothing",
    ("encoder", "random weights"): "random weights: its embeddings, CLIP scores and diversity figures mean nothing",
    ("encoder", "classical features"): "classical features (colour, texture and gradient statistics), not a learned "
                                       "embedding: similarities, clusters and diversity figures are rough proxies",
    ("restorer", "classical algorithm"): "classical algorithm (denoise and sharpen), not a learned face restorer",
}


class ModelLedger:
    """Models used by one job, one entry per role (a role answered by two models keeps both)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], dict] = {}

    def record(self, role: str, name: str, backend: str = "", digest: str = "", stand_in: str = "") -> None:
        if name:
            self.entries[(role, name)] = {"role": role, "name": name, "backend": backend, "digest": digest,
                                          "stand_in": stand_in}

    def as_list(self) -> list[dict]:
        return [self.entries[k] for k in sorted(self.entries)]

    def label(self, role: str) -> str:
        """How a figure names its model: `tiny-sdxl (random weights)`."""
        found = [e for (r, _), e in sorted(self.entries.items()) if r == role]
        return ", ".join(e["name"] + (f" ({e['stand_in']})" if e["stand_in"] else "") for e in found) or "not used"

    def warnings(self) -> list[str]:
        """One plain sentence per stand-in, for the top of the report."""
        out = []
        for e in self.as_list():
            if e["stand_in"]:
                what = CONSEQUENCES.get((e["role"], e["stand_in"]), f"{e['stand_in']}: a stand-in, not a trained model")
                out.append(f"{e['role']} {e['name']}: {what}")
        return out

    # -- from service answers ------------------------------------------------------------------

    def detection(self, response) -> None:
        """DetectResponse / AssessResponse: the detector, and the identity model of any embedded face."""
        self.record("detector", response.backend, response.backend)
        for result in response.results:
            for face in result.faces:
                if face.embedding_model:
                    self.record("identity", face.embedding_model, response.backend)

    def embedding(self, response) -> None:
        """EmbedImagesResponse / ScoreResponse."""
        self.record("encoder", response.encoder, "embedding", response.digest, response.stand_in)

    def restoration(self, response) -> None:
        self.record("restorer", response.model, "restoration", "", response.stand_in)

    async def generation_model(self, clients, name: str, role: str = "generator") -> None:
        """A generation-repository model, described by ListModels (digest, random weights)."""
        if not name or any(n == name and r == role for r, n in self.entries):
            return
        try:
            listed = await clients.generation.call("ListModels", generation_pb2.ListModelsRequest())
        except Exception as exc:  # noqa: BLE001 - provenance must not fail the job; the gap is recorded
            log.warning("ListModels failed; model recorded without digest", extra={"model": name, "error": str(exc)})
            self.record(role, name, "unknown (generation service did not answer ListModels)")
            return
        info = next((m for m in listed.models if m.name == name), None)
        if info is None:
            self.record(role, name, f"{listed.engine} (not listed by ListModels)")
        else:
            self.record(role, name, f"{info.backend} on {listed.engine}", info.digest, info.stand_in)
