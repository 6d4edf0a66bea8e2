"""The embedding service over real gRPC (in-process runtime: interceptor, health, error mapping):
every RPC, bad input mapped to INVALID_ARGUMENT / FAILED_PRECONDITION with the field named, and
the service still SERVING afterwards."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest

from likeness.api.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc
from likeness.core.images import encode_png
from likeness.embedding.app import create_service
from likeness.embedding.settings import EmbeddingSettings
from tests import photos
from tests.helpers import ServiceThread, free_port, health_status


def settings(tmp_path, **extra) -> EmbeddingSettings:
    return EmbeddingSettings(port=free_port(), metrics_enabled=False, store_uri=f"file://{tmp_path / 'store'}",
                             model_repository=str(tmp_path / "models"), model_cache_dir=str(tmp_path / "cache"),
                             **extra)


@pytest.fixture(scope="module")
def classical(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedding")
    s = settings(root)
    (root / "store" / "inputs").mkdir(parents=True)
    (root / "store" / "inputs" / "coffee.png").write_bytes(encode_png(photos.skimage_photo("coffee")))
    with ServiceThread(create_service(s), s) as server, server.channel() as channel:
        server.store_root = root / "store"
        yield server, embedding_pb2_grpc.EmbeddingServiceStub(channel)


def png(rgb) -> common_pb2.ImageInput:
    return common_pb2.ImageInput(data=encode_png(rgb))


def vec(values) -> common_pb2.Vector:
    return common_pb2.Vector(values=list(values))


def error_of(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=30)
    return err.value


def test_embed_images_with_a_bad_item(classical):
    _, stub = classical
    astronaut = photos.skimage_photo("astronaut")
    response = stub.EmbedImages(embedding_pb2.EmbedImagesRequest(images=[
        png(astronaut), common_pb2.ImageInput(data=b"not an image"), png(astronaut[:, ::-1])]), timeout=30)
    assert response.encoder == "classical-v1" and response.dimension == len(response.embeddings[0].values)
    assert [len(e.values) for e in response.embeddings] == [response.dimension, 0, response.dimension]
    a, c = np.array(response.embeddings[0].values), np.array(response.embeddings[2].values)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5) and a @ c == pytest.approx(1.0, abs=1e-4)
    assert [(e.index, e.code, e.field) for e in response.errors] == [(1, "INVALID_ARGUMENT", "images[1].data")]


def test_embed_images_from_store_uris(classical):
    server, stub = classical
    uri = f"file://{server.store_root}/inputs/coffee.png"
    by_uri = stub.EmbedImages(embedding_pb2.EmbedImagesRequest(images=[common_pb2.ImageInput(uri=uri)]), timeout=30)
    inline = stub.EmbedImages(embedding_pb2.EmbedImagesRequest(images=[png(photos.skimage_photo("coffee"))]),
                              timeout=30)
    assert list(by_uri.embeddings[0].values) == list(inline.embeddings[0].values)
    missing = error_of(stub.EmbedImages, embedding_pb2.EmbedImagesRequest(
        images=[common_pb2.ImageInput(uri=f"file://{server.store_root}/inputs/nope.png")]))
    assert missing.code() == grpc.StatusCode.NOT_FOUND and "images[0].uri" in missing.details()


def test_text_rpcs_need_a_text_tower(classical):
    server, stub = classical
    for call, request in ((stub.EmbedTexts, embedding_pb2.EmbedTextsRequest(texts=["a cat"])),
                          (stub.Score, embedding_pb2.ScoreRequest(images=[png(photos.skimage_photo("coffee"))],
                                                                  texts=["a cup of coffee"]))):
        err = error_of(call, request)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no text tower" in err.details() and "LIKENESS_EMBEDDING_ENCODER=open_clip" in err.details()
    assert health_status(server.port) == "SERVING"


def test_cluster_select_diversity_end_to_end(classical):
    _, stub = classical
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    x = centres[np.arange(60) % 3] + 0.1 * rng.normal(size=(60, 16))
    items = [embedding_pb2.LabeledVector(id=f"i{i}", vector=vec(v)) for i, v in enumerate(x)]
    clustered = stub.Cluster(embedding_pb2.ClusterRequest(items=items, k=0, k_max=6, seed=1), timeout=30)
    assert clustered.k == 3 and clustered.algorithm == "kmeans" and len(clustered.k_scores) == 5
    labels = [a.cluster for a in clustered.assignments]
    assert all(labels[i] == labels[i % 3] for i in range(60)) and len(clustered.centroids) == 3
    assert [a.id for a in clustered.assignments] == [it.id for it in items]

    candidates = [embedding_pb2.SelectionCandidate(id=a.id, quality=float(rng.random()),
                                                   groups={"cluster": str(a.cluster), "seed": str(i % 4)})
                  for i, a in enumerate(clustered.assignments)]
    quotas = [common_pb2.Quota(dimension="cluster", group="*", min=4, max=4),
              common_pb2.Quota(dimension="seed", group="*", min=3, max=0)]
    selected = stub.Select(embedding_pb2.SelectRequest(candidates=candidates, count=12, quotas=quotas), timeout=30)
    assert len(selected.selected_ids) == 12 and selected.method == embedding_pb2.SELECT_METHOD_EXACT
    counts = {(c.dimension, c.group): c.count for c in selected.counts}
    assert all(counts[("cluster", str(k))] == 4 for k in range(3))
    assert all(counts[("seed", str(s))] >= 3 for s in range(4))

    poses = [common_pb2.Pose(yaw=y, pitch=0, roll=0) for y in np.linspace(-30, 30, 30)]
    report = stub.Diversity(embedding_pb2.DiversityRequest(
        reference=[vec(v) for v in x[:30]], generated=[vec(v) for v in x[30:]], nearest_k=3,
        generated_poses=poses, bootstrap=50, seed=3), timeout=30)
    assert 0 <= report.precision.value <= 1 and report.coverage.value > 0.5
    assert report.yaw_std.value == pytest.approx(np.std(np.linspace(-30, 30, 30)), rel=1e-5)
    assert report.precision.ci_low <= report.precision.ci_high


def items_of(vectors, ids=None):
    return [embedding_pb2.LabeledVector(id=(ids[i] if ids else f"i{i}"), vector=vec(v)) for i, v in enumerate(vectors)]


GOOD = [[float(i), float(i % 3)] for i in range(6)]
BAD_REQUESTS = [
    ("Cluster", embedding_pb2.ClusterRequest(items=items_of(GOOD[:5] + [[1.0, math.nan]]), k=2), "items[5].vector"),
    ("Cluster", embedding_pb2.ClusterRequest(items=items_of(GOOD[:5] + [[math.inf, 0.0]]), k=2), "items[5].vector"),
    ("Cluster", embedding_pb2.ClusterRequest(items=items_of(GOOD[:5] + [[1.0, 2.0, 3.0]]), k=2), "items[5].vector"),
    ("Cluster", embedding_pb2.ClusterRequest(items=items_of(GOOD), k=7), "k"),
    ("Cluster", embedding_pb2.ClusterRequest(items=[], k=2), "items"),
    ("Cluster", embedding_pb2.ClusterRequest(items=items_of(GOOD, ["a", "b", "c", "a", "e", "f"]), k=2), "items[3].id"),
    ("Cluster", embedding_pb2.ClusterRequest(items=items_of(GOOD), k=2, outlier_z=-1), "outlier_z"),
    ("Select", embedding_pb2.SelectRequest(candidates=[  # minimums sum to 4 > count 3
        embedding_pb2.SelectionCandidate(id=str(i), quality=1, groups={"seed": str(i % 2)}) for i in range(4)],
        count=3, quotas=[common_pb2.Quota(dimension="seed", group="*", min=2)]), "quotas"),
    ("Select", embedding_pb2.SelectRequest(candidates=[
        embedding_pb2.SelectionCandidate(id="a", quality=1, groups={"seed": "1"}),
        embedding_pb2.SelectionCandidate(id="b", quality=1, groups={"seed": "2"})], count=2,
        quotas=[common_pb2.Quota(dimension="seed", group="*", min=2)]), "quotas[0].min"),
    ("Select", embedding_pb2.SelectRequest(candidates=[
        embedding_pb2.SelectionCandidate(id="a", quality=math.nan)], count=1), "candidates[0].quality"),
    ("Select", embedding_pb2.SelectRequest(candidates=[
        embedding_pb2.SelectionCandidate(id="a", quality=1), embedding_pb2.SelectionCandidate(id="a", quality=2)],
        count=1), "candidates[1].id"),
    ("Select", embedding_pb2.SelectRequest(candidates=[embedding_pb2.SelectionCandidate(id="a", quality=1)],
                                           count=2), "count"),
    ("Diversity", embedding_pb2.DiversityRequest(reference=[], generated=[vec([1, 2])] * 3), "reference"),
    ("Diversity", embedding_pb2.DiversityRequest(reference=[vec([1, 2])] * 3, generated=[vec([1, 2, 3])] * 3),
     "generated"),
    ("Diversity", embedding_pb2.DiversityRequest(reference=[vec([1, 2])] * 3, generated=[vec([1, 2])] * 3,
                                                 nearest_k=3), "nearest_k"),
    ("EmbedImages", embedding_pb2.EmbedImagesRequest(images=[]), "images"),
    ("EmbedImages", embedding_pb2.EmbedImagesRequest(images=[common_pb2.ImageInput(data=b"\x89PNG broken")]),
     "images[0].data"),
]


@pytest.mark.parametrize(("method", "request_pb", "field"), BAD_REQUESTS,
                         ids=[f"{m}-{f}-{i}" for i, (m, _, f) in enumerate(BAD_REQUESTS)])
def test_bad_input_is_invalid_argument_naming_the_field(classical, method, request_pb, field):
    server, stub = classical
    err = error_of(getattr(stub, method), request_pb)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details().startswith(f"{field}:"), err.details()
    assert health_status(server.port) == "SERVING"


@pytest.fixture(scope="module")
def clip_server(tmp_path_factory, tiny_clip_repo):
    _, models = tiny_clip_repo
    root = tmp_path_factory.mktemp("embedding-clip")
    s = EmbeddingSettings(port=free_port(), metrics_enabled=False, store_uri=f"file://{root / 'store'}",
                          model_repository=str(models), model_cache_dir=str(root / "cache"),
                          embedding_encoder="open_clip", embedding_open_clip_model="tiny-clip")
    with ServiceThread(create_service(s), s) as server, server.channel() as channel:
        yield server, embedding_pb2_grpc.EmbeddingServiceStub(channel)


def test_open_clip_texts_and_scores(clip_server):
    _, stub = clip_server
    texts = stub.EmbedTexts(embedding_pb2.EmbedTextsRequest(texts=["an astronaut", "a cup of coffee"]), timeout=60)
    assert texts.encoder == "open_clip:likeness-tiny-clip" and texts.dimension == 32
    images = [png(photos.skimage_photo("astronaut")), common_pb2.ImageInput(data=b"junk"),
              png(photos.skimage_photo("coffee"))]
    scored = stub.Score(embedding_pb2.ScoreRequest(images=images, texts=["an astronaut", "x", "a cup of coffee"]),
                        timeout=60)
    embedded = stub.EmbedImages(embedding_pb2.EmbedImagesRequest(images=images), timeout=60)
    t = [np.array(v.values) for v in texts.embeddings]
    for i, j in ((0, 0), (2, 1)):
        cosine = float(np.array(embedded.embeddings[i].values) @ t[j])
        assert scored.cosine[i] == pytest.approx(cosine, abs=1e-5)
        assert scored.score[i] == pytest.approx(min(1.0, max(0.0, 2.5 * cosine)), abs=1e-5)
    assert scored.cosine[1] == 0 and scored.score[1] == 0 and [e.index for e in scored.errors] == [1]
    one_text = stub.Score(embedding_pb2.ScoreRequest(images=images[:1], texts=["an astronaut"]), timeout=60)
    assert one_text.cosine[0] == pytest.approx(scored.cosine[0], abs=1e-6)
    err = error_of(stub.Score, embedding_pb2.ScoreRequest(images=images, texts=["a", "b"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("texts:")


def test_missing_open_clip_weights_fail_startup_naming_the_path(tmp_path):
    from likeness.core.errors import ModelMissing
    from likeness.core.server import ServiceRuntime

    s = settings(tmp_path, embedding_encoder="open_clip")
    service = create_service(s)
    with pytest.raises(ModelMissing, match=str(tmp_path / "models" / "open-clip-vit-b-32" / "model.yaml")):
        import asyncio

        async def warm():  # the runtime is built inside the loop it serves on
            await ServiceRuntime(service, s).warm()

        asyncio.run(warm())
