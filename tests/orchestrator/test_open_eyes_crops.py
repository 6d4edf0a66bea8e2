"""The open_eyes job on its work crops, with scripted services (no models, ~1 s): every service
call sees the face's crop, never the frame; the second face is cut from the frame that holds the
first face's winner; result.png is the winners copied back in order and the one full-frame
encode; a repair that reaches its crop's inner edge fails the job instead of pasting a seam."""

from __future__ import annotations

import json

import numpy as np
import pytest

from likeness.api.v1 import common_pb2, detection_pb2, generation_pb2, restoration_pb2
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.core.images import decode_image, encode_mask_png, encode_png
from likeness.core.pngmeta import read_png_metadata
from likeness.orchestrator.workflows import open_eyes, open_eyes_report, work_crop
from tests.orchestrator.fake_services import FakeServices, open_test_store, run_job

LM = common_pb2.LandmarkKind
HEIGHT, WIDTH = 260, 400
# face 0 small on the left; face 1 large, so its work crop (the box grown by 0.35 of its side)
# reaches over face 0's eyes: face 1 must be cut from the frame that holds face 0's winner
FACES = [((30, 50, 90, 110), (45, 70), (75, 70)), ((100, 20, 280, 190), (150, 80), (230, 80))]


def source_face(box, left, right) -> common_pb2.Face:
    face = common_pb2.Face(box=common_pb2.Box(x_min=box[0], y_min=box[1], x_max=box[2], y_max=box[3]), score=0.9,
                           embedding=common_pb2.Vector(values=[1.0, 0.0]), embedding_model="dlib-resnet-128",
                           left_eye_openness=0.1, right_eye_openness=0.1)
    for kind, (x, y) in ((LM.LANDMARK_KIND_LEFT_EYE, left), (LM.LANDMARK_KIND_RIGHT_EYE, right)):
        face.landmarks.add(kind=kind, point=common_pb2.Point(x=x, y=y))
    return face


class EyeServices(FakeServices):
    """RegionMask: a rectangle around the eyes; Generate: the crop with its region painted by seed;
    Composite: the patch through the mask; Restore: the face box's low bit flipped; Detect: the
    source's two faces, or on a crop the face RegionMask last saw. Records every image's shape."""

    def __post_init__(self):
        super().__post_init__()
        self.shapes: list[tuple[str, tuple]] = []
        self.inits: list[np.ndarray] = []
        self.local_box = None
        self.bad_edge = False
        self.detection.handlers["Detect"] = self._detect_eyes
        self.generation.handlers["Generate"] = self._inpaint
        self.restoration.handlers.update(RegionMask=self._mask, Composite=self._composite, Restore=self._restore)

    def _pixels(self, what: str, uri: str) -> np.ndarray:
        rgb = decode_image(self.store.get(uri), what)
        self.shapes.append((what, rgb.shape[:2]))
        return rgb

    def _put(self, kind: str, rgb: np.ndarray, parameters: str | None = None) -> common_pb2.Artifact:
        self.puts = getattr(self, "puts", 0) + 1
        obj = self.store.put(f"{kind}/{self.puts}.png", encode_png(rgb, parameters), "image/png")
        return common_pb2.Artifact(uri=obj.uri, sha256=obj.sha256)

    def _detect_eyes(self, req):
        results = []
        for i, im in enumerate(req.images):
            if im.uri == self.source:
                faces = [source_face(*f) for f in FACES]
            else:
                self._pixels("verify", im.uri)
                faces = [common_pb2.Face(box=self.local_box, score=0.9, embedding=common_pb2.Vector(values=[0.8, 0.6]),
                                         embedding_model="dlib-resnet-128", left_eye_openness=0.9,
                                         right_eye_openness=0.3)]
            results.append(detection_pb2.DetectResult(index=i, faces=faces))
        return detection_pb2.DetectResponse(backend="blazeface", results=results)

    def _mask(self, req):
        (item,) = req.items
        self.local_box = item.face_box
        xs = [lm.point.x for lm in item.landmarks]
        ys = [lm.point.y for lm in item.landmarks]
        x0, y0, x1, y1 = int(min(xs)) - 4, int(min(ys)) - 4, int(max(xs)) + 5, int(max(ys)) + 5
        mask = np.zeros((item.height, item.width), np.uint8)
        mask[y0:y1, x0:x1] = 255
        obj = self.store.put(f"masks/{x0}-{y0}-{item.width}x{item.height}.png", encode_mask_png(mask), "image/png")
        box = common_pb2.Box(x_min=max(x0 - 8, 0), y_min=max(y0 - 8, 0), x_max=min(x1 + 8, item.width),
                             y_max=min(y1 + 8, item.height))
        return restoration_pb2.RegionMaskResponse(results=[restoration_pb2.RegionMaskResult(
            mask=common_pb2.Artifact(uri=obj.uri, sha256=obj.sha256), crop_box=box, area=int((mask > 0).sum()))])

    def _inpaint(self, req):
        init, mask = self._pixels("init", req.init_image.uri), self._pixels("mask", req.mask.uri)[..., 0] > 0
        assert init.shape[:2] == mask.shape and req.paste == generation_pb2.PASTE_MODE_REGION
        self.inits.append(init)
        images = []
        for i in range(req.count):
            seed = req.seed + i
            out = init.copy()
            out[mask] = (seed * 40 + 30) % 256
            text = f"open eyes\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: {seed}, Size: 64x64, Model: tiny-sdxl"
            images.append(generation_pb2.GeneratedImage(artifact=self._put("gen", out, text),
                                                        seed=seed, parameters=text))
        return generation_pb2.GenerateResponse(images=images)

    def _composite(self, req):
        results = []
        for i, item in enumerate(req.items):
            base, patch = self._pixels("base", item.base.uri), self._pixels("patch", item.patch.uri)
            mask = self._pixels("mask", item.mask.uri)[..., 0] > 0
            out = base.copy()
            out[mask] = patch[mask]
            if self.bad_edge:
                out[:, 0] = 255 - out[:, 0]  # a blend that reached the crop's left edge
            results.append(restoration_pb2.CompositeResult(
                index=i, image=self._put("comp", out),
                seam=restoration_pb2.Seam(boundary_gradient=1.0, hard_gradient=4.0, max_step=2.0, reference_step=3.0)))
        return restoration_pb2.CompositeResponse(results=results)

    def _restore(self, req):
        results = []
        for i, item in enumerate(req.items):
            out = self._pixels("restore", item.image.uri).copy()
            b = item.face_box
            out[int(b.y_min):int(b.y_max), int(b.x_min):int(b.x_max)] ^= 1
            results.append(restoration_pb2.RestoreResult(
                index=i, image=self._put("restored", out),
                changed_pixels=int((b.x_max - b.x_min) * (b.y_max - b.y_min)), changed_box=b))
        return restoration_pb2.RestoreResponse(model="classical", stand_in="classical algorithm", results=results)


@pytest.fixture
def photo():
    return np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def run(tmp_path, photo, services_setup=None, **fields):
    store = open_test_store(tmp_path)
    services = EyeServices(store)
    services.source = store.put("inputs/group.png", encode_png(photo), "image/png").uri
    if services_setup:
        services_setup(services)
    spec = o.OpenEyesSpec(image=common_pb2.ImageInput(uri=services.source), model="tiny-sdxl", seed=1, **fields)
    return run_job(tmp_path, o.JobSpec(open_eyes=spec), services), services, store


@pytest.mark.parametrize("eye_reach", [None, (0.0, 0)])  # the crop's first guess; too small: it must grow
def test_each_face_works_on_its_crop_cut_from_the_frame_holding_the_faces_before_it(tmp_path, photo, monkeypatch,
                                                                                  eye_reach):
    if eye_reach:
        monkeypatch.setattr(work_crop, "EYE_REACH_IOD", eye_reach[0])
        monkeypatch.setattr(work_crop, "EYE_REACH_PX", eye_reach[1])
    encoded = []
    real = open_eyes.encode_png

    def counted(rgb, *args, **kwargs):
        encoded.append(rgb.shape[:2])
        return real(rgb, *args, **kwargs)

    for module in (open_eyes, open_eyes_report):
        monkeypatch.setattr(module, "encode_png", counted)
    job, services, store = run(tmp_path, photo, variations=2, restore=True)
    assert job.state == "SUCCEEDED", job.error
    m = json.loads(store.get(job.manifest["uri"]))
    crops = [tuple(f["crop_box"]) for f in m["faces"]]
    masks = len(services.restoration.sent("RegionMask"))
    assert masks == (3 if eye_reach else 2)  # face 0's crop grew once when the guess fell short
    sizes = {(y1 - y0, x1 - x0) for x0, y0, x1, y1 in crops}
    assert all(shape in sizes for _, shape in services.shapes), services.shapes  # never the frame
    assert (HEIGHT, WIDTH) not in sizes and encoded.count((HEIGHT, WIDTH)) == 1  # result.png only
    # face 1's crop was cut from the frame holding face 0's winner (its eyes lie inside face 1's crop)
    (x0, y0, x1, y1), (bx0, by0, _, _) = crops
    winners = [decode_image(store.get(next(v["uri"] for v in m["variations"] if v["face"] == k and v["rank"] == 1)),
                            "image") for k in (0, 1)]
    eyes = (slice(66 - by0, 75 - by0), slice(41 - bx0, 80 - bx0))  # face 0's eye rectangle in face 1's crop
    assert np.array_equal(services.inits[1][eyes], winners[0][66 - y0:75 - y0, 41 - x0:80 - x0])
    assert not np.array_equal(services.inits[1][eyes], photo[66:75, 41:80])
    frame = photo.copy()  # result.png: the winners copied back in order, nothing else
    for (cx0, cy0, cx1, cy1), winner in zip(crops, winners, strict=True):
        frame[cy0:cy1, cx0:cx1] = winner
    assert np.array_equal(decode_image(store.get(m["result"]["uri"]), "image"), frame)
    for v in m["variations"]:
        assert v["restoration"]["changed_pixels"] > 0 and v["restoration"]["changed_outside_face"] == 0
        meta = read_png_metadata(store.get(v["uri"]))
        assert json.loads(meta["likeness"])["crop_box"] == v["crop_box"] == m["faces"][v["face"]]["crop_box"]
        assert meta["parameters"].startswith(f"open eyes\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: {v['seed']}")
        assert v["identity_similarity"] == pytest.approx(0.8)
        # one eye open, one not: the eyes are not open (the lesser eye counts, not the mean)
        assert v["eye_openness_after"] == pytest.approx(0.3) and v["eyes_open"] is False


def test_a_repair_that_changes_its_crops_inner_edge_fails_the_job(tmp_path, photo):
    job, _, store = run(tmp_path, photo, lambda s: setattr(s, "bad_edge", True), variations=1, face_index=0)
    assert job.state == "FAILED" and "CropEdgeChanged" in job.error, job.error
