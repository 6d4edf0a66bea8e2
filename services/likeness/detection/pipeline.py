"""The detection pipeline: detector -> large-face retry -> pose -> (identity) -> validation,
and Assess = the same plus quality. Plain numpy in, dataclasses out; no gRPC.

Large faces: single-shot detectors miss faces that fill most of the frame (BlazeFace full-range
finds nothing on the 112x112 aligned Tom Hanks crop and scores 0.55 at a 70% face; SCRFD at its
640x640 default fails above ~40%). When the first pass finds no face, or its largest face's
shorter side exceeds `large_face_fraction` of the image's shorter side, the image is padded with
black by `pad_fraction` of its longer side on every side and detected again; both passes' faces
are kept, mapped back (clipped to the image), duplicates suppressed (the better-scored sighting of
each face stays): the padded copy shrinks every face, so a small face beside a large one may be
seen by the first pass only.

Small faces (with the face mesh): when no face reaches the detector's `min_score`, the small weak
sightings the passes saw down to half of it are looked at again, closer: a crop of 4x the
sighting's side from the source pixels, detected at full input resolution (`_look_closer`). A 36 px
face in a 640 px image is ~11 px in the detector's input and scores ~0.3; in the closer crop it
scores 0.8-0.9, and the size gate, not NO_FACE, decides it. Every face found so must be a face to
the mesh too (presence >= MIN_MESH_PRESENCE), which textures a detector half-sees are not. It
costs nothing on images with a confident face, and one to three crops (two inferences each) on
the others that have small weak sightings.

Working size: an image much larger than the detector's input is shrunk once (area averaging) to
twice the input side before the passes below, so the mirror pass and the padded retry do not each
resize the full image again; the network sees the same pixels either way. Coordinates are scaled
back to the source image.

Elongated images (longer side over 1.5x the shorter): letterboxing would shrink every face by the
aspect ratio (two portraits side by side would each lose half their pixels), so the detector also
runs on square tiles of the shorter side, overlapping by at least half a tile (at most 8 tiles),
besides the whole image; duplicates across views are suppressed (overlap IoU > 0.3 or
intersection > 60% of the smaller box), keeping the higher score.

Flip averaging (`flip_tta`, on by default): the detector also runs on the mirrored image. Both
passes keep candidates down to half the detector's `min_score`; each face is the mean of its two
sightings (mirrored back, left/right landmarks swapped), its score the mean of the two scores,
where a pass that did not see the face contributes 0; faces whose mean score is under `min_score`
are dropped. Why: detectors are not exactly mirror-equivariant (BlazeFace's keypoints of a turned
head shift by several pixels between a photo and its mirror image); after averaging they are, so
the pose of a mirrored photo is exactly the mirrored pose (yaw and roll negated) and landmarks are
less noisy. And real faces score alike in both views while false positives do not (a 0.54
"face" in an upscaled coffee photo is not seen at all in its mirror image), so the mean score
separates them better. It costs one more detector inference (~4 ms per 1024x1024 image).

Face mesh (`mesh`, on by default with `mesh_faces` = 1): the highest-scoring faces (up to
`mesh_faces`) are measured again by the 468-point face mesh and the iris model (mesh.py) on the
source pixels at the face's own resolution: their landmarks become the mesh's (eye centres = iris
centres, mouth corners, face-oval points beside the ears), and they gain eyelid contours, iris
centres and eye openness. Only the first face by default, because validation needs one face's
details (two confident faces are rejected as MULTIPLE_FACES whatever their pose) and each face
costs ~2 ms of mesh and ~3 ms of iris inference; the other faces keep the detector's landmarks.
Pose is then estimated from each face's landmarks with a camera built from the face (pose.py).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from likeness.core import metrics
from likeness.core.batch import Outcome, run_each
from likeness.core.memo import LruCache, content_key
from likeness.detection.backends.base import FaceDetector, IdentityEncoder, probe_image
from likeness.detection.faces import Box, Face, iou, mirror_face, outside_share
from likeness.detection.mesh import FaceMesh, mesh_box, mesh_landmarks
from likeness.detection.pose import estimate_pose, pose_from_mesh
from likeness.detection.quality import QualityMeasures, QualityScales, QualityWeights, combined_score, measure
from likeness.detection.validation import Rejection, ValidationPolicy, Verdict, limit_text, validate

MAX_ASPECT = 1.5  # longer / shorter side above which the image is also detected in square tiles
MAX_TILES = 8
# The face mesh's face-presence probability under which a detection is dropped: real faces,
# blurred, small and turned ones included, score >= 0.9 on the evaluation set; a "face" in a star
# field scored 0.24.
MIN_MESH_PRESENCE = 0.5
# A closer look (_look_closer) where the detector half-saw a face and found none: crops of
# CLOSER_CROP x the sighting's side, at most CLOSER_SIGHTINGS of them, only for sightings whose
# longer side is at most CLOSER_MAX_SIDE of the image's shorter side. Why that limit: the look is
# for faces under the default size limit (0.08), which the detector sees at under ~15 px; a larger
# sighting is already within its reach (60 px faces of a 640 px image, 0.094, score 0.5-0.9 from
# the whole image), and looking closer at it would cost two inferences for nothing on most
# face-less photos (the detection bench's coffee photo half-sees "faces" at 0.108 and 0.368).
CLOSER_CROP = 4.0
CLOSER_SIGHTINGS = 3
CLOSER_MAX_SIDE = 0.1


@dataclass(frozen=True)
class Detection:
    faces: list[Face]  # highest confidence first
    verdict: Verdict
    width: int
    height: int


@dataclass(frozen=True)
class Assessment:
    faces: list[Face]
    verdict: Verdict
    width: int
    height: int
    quality: QualityMeasures
    score: float


@dataclass
class FacePipeline:
    detector: FaceDetector
    encoder: IdentityEncoder | None = None
    large_face_fraction: float = 0.4
    pad_fraction: float = 0.5
    flip_tta: bool = True
    scales: QualityScales = field(default_factory=QualityScales)
    mesh: FaceMesh | None = None
    mesh_faces: int = 1
    # recent results by content key: a repeated call (a retry, a resumed job) costs a lookup
    cache: LruCache = field(default_factory=lambda: LruCache(0))
    # the models are not safe to call from two threads at once; one pod serves one core's worth
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def load(self) -> None:
        self.detector.load()
        if self.mesh is not None:
            self.mesh.load()
        if self.encoder is not None:
            self.encoder.load()

    def warmup(self) -> None:
        """One real inference of every model, so the first request does not pay for lazy init."""
        self.find_faces(probe_image(), with_embeddings=False)
        if self.encoder is not None:
            with self._lock:
                self.encoder.warmup()

    def describe(self) -> dict:
        return {**self.detector.describe(), **(self.mesh.describe() if self.mesh else {"face_mesh": "none"}),
                "mesh_faces": self.mesh_faces if self.mesh else 0,
                "identity_model": self.encoder.name if self.encoder else "none",
                "large_face_fraction": self.large_face_fraction, "pad_fraction": self.pad_fraction}

    # --- detection --------------------------------------------------------------------------------

    def _detect_both_ways(self, rgb: np.ndarray) -> list[Face]:
        """Faces down to half the detector's `min_score`: those under it are the weak sightings
        that `_look_closer` may zoom into; callers split them off (`_confident`)."""
        floor = self.detector.min_score / 2
        faces = self.detector.detect(rgb, min_score=floor)
        if not self.flip_tta:
            return faces
        width = rgb.shape[1]
        mirrored = [mirror_face(f, width)
                    for f in self.detector.detect(np.ascontiguousarray(rgb[:, ::-1]), min_score=floor)]
        return merge_sightings(faces, mirrored)

    def _confident(self, faces: list[Face]) -> tuple[list[Face], list[Face]]:
        """(faces at or over the detector's `min_score`, weak sightings under it)."""
        floor = self.detector.min_score
        return [f for f in faces if f.score >= floor], [f for f in faces if f.score < floor]

    def _detect_views(self, rgb: np.ndarray) -> list[Face]:
        height, width = rgb.shape[:2]
        short, long_ = min(height, width), max(height, width)
        whole = self._detect_both_ways(rgb)
        if long_ <= MAX_ASPECT * short:
            return whole
        count = math.ceil((long_ - short) / (short / 2)) + 1
        if count > MAX_TILES:
            return whole
        faces = list(whole)
        for k in range(count):
            start = round(k * (long_ - short) / (count - 1))
            if width >= height:
                tile, dx, dy = rgb[:, start:start + short], start, 0
            else:
                tile, dx, dy = rgb[start:start + short, :], 0, start
            faces += [_shift(f, dx, dy, width, height) for f in self._detect_both_ways(np.ascontiguousarray(tile))]
        return suppress_duplicates(faces)

    def _detect_at_working_size(self, rgb: np.ndarray) -> tuple[list[Face], list[Face]]:
        """(faces, weak sightings) in source coordinates."""
        height, width = rgb.shape[:2]
        # the shorter side bounds the work: elongated images are tiled in squares of that side
        limit = 2 * getattr(self.detector, "input_side", 0)
        if not limit or min(height, width) <= limit:
            return self._detect_with_retry(rgb)
        scale = limit / min(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        sx, sy = width / size[0], height / size[1]
        faces, weak = self._detect_with_retry(small)
        return ([_scale(f, sx, sy, width, height) for f in faces], [_scale(f, sx, sy, width, height) for f in weak])

    def _detect_with_retry(self, rgb: np.ndarray) -> tuple[list[Face], list[Face]]:
        height, width = rgb.shape[:2]
        faces, weak = self._confident(self._detect_views(rgb))
        largest = max((min(f.box.width, f.box.height) for f in faces), default=0.0)
        if faces and largest <= self.large_face_fraction * min(width, height):
            return faces, weak
        pad = int(round(self.pad_fraction * max(width, height)))
        padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        retry, _ = self._confident([_shift(f, -pad, -pad, width, height) for f in self._detect_views(padded)])
        # a face must overlap the original image to count
        retry = [f for f in retry if f.box.width > 1 and f.box.height > 1]
        # Both passes' faces, the better sighting of each kept: the padded copy shrinks every face,
        # so a smaller face beside the large one may be seen by the first pass only (a 100 px
        # portrait beside a 240 px one vanished when the padded pass replaced the first).
        return suppress_duplicates(faces + retry), weak

    def find_faces(self, rgb: np.ndarray, with_embeddings: bool = False) -> list[Face]:
        if with_embeddings and self.encoder is None:
            from likeness.core.errors import FailedPrecondition

            raise FailedPrecondition("with_embeddings", "this server runs no identity model "
                                     "(LIKENESS_DETECTION_IDENTITY=none)")
        height, width = rgb.shape[:2]
        with self._lock:
            faces, weak = self._detect_at_working_size(rgb)
            if not faces and weak and self.mesh is not None:
                faces = self._look_closer(rgb, weak)
            faces = [_cover_landmarks(f, width, height) for f in faces]
            faces = sorted(faces, key=lambda f: -f.score)
            faces = self._refine(rgb, faces)
            faces = [f if f.pose else f.with_(pose=estimate_pose(f.landmarks, f.box)) for f in faces]
            if with_embeddings and faces:
                vectors = self.encoder.embed(rgb, faces)
                faces = [f.with_(embedding=v, embedding_model=self.encoder.name)
                         for f, v in zip(faces, vectors, strict=True)]
        return faces

    def _look_closer(self, rgb: np.ndarray, weak: list[Face]) -> list[Face]:
        """Faces found by detecting again, at a higher resolution, around the small weak sightings
        of an image where no face reached `min_score`: a square of CLOSER_CROP x the sighting's side
        cut from the source pixels (at most CLOSER_SIGHTINGS sightings, best first). Each face must
        be one for the face mesh too (presence >= MIN_MESH_PRESENCE): textures that the detector
        half-sees as faces (a star field) are not faces at any resolution."""
        height, width = rgb.shape[:2]
        found: list[Face] = []
        for sighting in sorted(weak, key=lambda f: -f.score)[:CLOSER_SIGHTINGS]:
            b = sighting.box
            if max(b.width, b.height) > CLOSER_MAX_SIDE * min(width, height):
                continue
            side = CLOSER_CROP * max(b.width, b.height)
            x0 = int(max(0, min(width - side, (b.x_min + b.x_max - side) / 2)))
            y0 = int(max(0, min(height - side, (b.y_min + b.y_max - side) / 2)))
            crop = np.ascontiguousarray(rgb[y0:y0 + int(side), x0:x0 + int(side)])
            faces, _ = self._confident(self._detect_both_ways(crop))
            found += [f for f in (_shift(f, x0, y0, width, height) for f in faces)
                      if self.mesh.presence(rgb, f) >= MIN_MESH_PRESENCE]
        return suppress_duplicates(found)

    def _refine(self, rgb: np.ndarray, faces: list[Face]) -> list[Face]:
        """The first `mesh_faces` faces measured by the mesh, best first; a face the mesh does not
        see as one (presence < MIN_MESH_PRESENCE) is dropped and the next one measured instead."""
        if self.mesh is None or not self.mesh_faces:
            return faces
        out, refined = [], 0
        for face in faces:
            if refined < self.mesh_faces:
                face = self._refined(rgb, face)
                if face is None:
                    continue
                refined += 1
            out.append(face)
        return out

    def _refined(self, rgb: np.ndarray, face: Face) -> Face | None:
        """The face with the mesh's landmarks (the detector's ear points kept), eyes and pose, or
        None when the mesh sees no face there. Its box stays the detector's (the mesh box would
        change what `min_face_fraction` means), grown to hold the new landmarks."""
        height, width = rgb.shape[:2]
        result = self.mesh.run(rgb, face)
        if result.presence < MIN_MESH_PRESENCE:
            return None
        marks = mesh_landmarks(result)
        refined = face.with_(landmarks={**face.landmarks, **marks}, left_eye=result.left_eye,
                             right_eye=result.right_eye, cut_off=outside_share(mesh_box(result), width, height))
        refined = _cover_landmarks(refined, width, height)
        # pose from the mesh's own 3-D points: no camera, no detector landmarks, so the same face
        # pixels give the same pose on any canvas (the detector's points move with its scale)
        return refined.with_(pose=pose_from_mesh(result.points))

    def detect(self, rgb: np.ndarray, policy: ValidationPolicy, with_embeddings: bool = False) -> Detection:
        height, width = rgb.shape[:2]
        faces = self.find_faces(rgb, with_embeddings)
        return Detection(faces, validate(faces, width, height, policy), width, height)

    def cached(self, stage: str, rgb: np.ndarray, *args) -> Detection | Assessment:
        """`detect` or `assess` (by `stage`) of `rgb` with `args`, answered from the result cache
        when the same pixels and parameters were seen; the result enters the cache even if the
        caller has gone by the time it is ready."""
        key = content_key(stage, rgb, args)
        hit = self.cache.get(key)
        if hit is not None:
            metrics.ITEMS.labels("detection", f"{stage}_model", "cached").inc()
            return hit
        out = {"detect": self.detect, "assess": self.assess}[stage](rgb, *args)
        self.cache.put(key, out)
        metrics.ITEMS.labels("detection", f"{stage}_model", "computed").inc()
        return out

    def cached_each(self, stage: str, images: list[np.ndarray], *args) -> list[Outcome]:
        """`cached(stage, rgb, *args)` for every image of one request, in order, as one unit of
        model work (core.batch.run_each): a failed image gets its LikenessError as its outcome's error."""
        return run_each(lambda rgb: self.cached(stage, rgb, *args), images)

    def assess(self, rgb: np.ndarray, policy: ValidationPolicy, weights: QualityWeights,
               with_embeddings: bool = False, min_quality: float | None = None) -> Assessment:
        found = self.detect(rgb, policy, with_embeddings)
        best = found.faces[0] if found.faces else None
        measures = measure(rgb, best.box if best else None, best.score if best else 0.0)
        score = combined_score(measures, weights, self.scales)
        verdict = found.verdict
        if verdict.accepted and policy.min_sharpness > 0 and measures.sharpness_face < policy.min_sharpness:
            verdict = Verdict(False, Rejection.BLURRY, f"face sharpness {measures.sharpness_face:.1f} "
                                                      f"< {limit_text(policy.min_sharpness)}")
        elif verdict.accepted and min_quality is not None and score < min_quality:
            verdict = Verdict(False, Rejection.LOW_QUALITY, f"quality score {score:.3f} < {limit_text(min_quality)}")
        return Assessment(found.faces, verdict, found.width, found.height, measures, score)


def merge_sightings(first: list[Face], second: list[Face], min_iou: float = 0.3) -> list[Face]:
    """Pairs faces of two passes by box overlap (best pairs first) and averages each pair: box,
    landmarks present in both, score. A face seen by one pass only keeps its box and landmarks and
    half its score (the other pass contributes 0). Symmetric in its arguments up to rounding."""
    pairs = sorted(((iou(a.box, b.box), i, j) for i, a in enumerate(first) for j, b in enumerate(second)),
                   reverse=True)
    used_a, used_b, merged = set(), set(), []
    for overlap, i, j in pairs:
        if overlap < min_iou or i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        a, b = first[i], second[j]
        box = Box((a.box.x_min + b.box.x_min) / 2, (a.box.y_min + b.box.y_min) / 2,
                  (a.box.x_max + b.box.x_max) / 2, (a.box.y_max + b.box.y_max) / 2)
        marks = {k: ((a.landmarks[k][0] + b.landmarks[k][0]) / 2, (a.landmarks[k][1] + b.landmarks[k][1]) / 2)
                 for k in a.landmarks if k in b.landmarks}
        merged.append(a.with_(box=box, landmarks=marks, score=(a.score + b.score) / 2))
    merged += [f.with_(score=f.score / 2) for i, f in enumerate(first) if i not in used_a]
    merged += [f.with_(score=f.score / 2) for j, f in enumerate(second) if j not in used_b]
    return merged


def _cover_landmarks(face: Face, width: int, height: int) -> Face:
    """Grows the box to hold every landmark (BlazeFace's ear points of a turned head lie up to
    ~20% of the box width outside its box), clipped to the image: callers may rely on a face's
    landmarks lying in its box, and an eye mask built from them stays inside the face crop."""
    if not face.landmarks:
        return face
    xs = [x for x, _ in face.landmarks.values()]
    ys = [y for _, y in face.landmarks.values()]
    b = face.box
    box = Box(min(b.x_min, *xs), min(b.y_min, *ys), max(b.x_max, *xs), max(b.y_max, *ys)).clipped(width, height)
    return face.with_(box=box)


def _scale(face: Face, sx: float, sy: float, width: int, height: int) -> Face:
    b = face.box
    box = Box(b.x_min * sx, b.y_min * sy, b.x_max * sx, b.y_max * sy).clipped(width, height)
    return face.with_(box=box, landmarks={k: (x * sx, y * sy) for k, (x, y) in face.landmarks.items()})


def suppress_duplicates(faces: list[Face], max_iou: float = 0.3, max_cover: float = 0.6) -> list[Face]:
    """Best-first: drops a face that overlaps a kept one (IoU > max_iou, or their intersection over
    the smaller box's area > max_cover: a face cut by a tile edge inside the whole face)."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: -f.score):
        if all(iou(f.box, k.box) <= max_iou and _cover(f.box, k.box) <= max_cover for k in kept):
            kept.append(f)
    return kept


def _cover(a: Box, b: Box) -> float:
    w = max(0.0, min(a.x_max, b.x_max) - max(a.x_min, b.x_min))
    h = max(0.0, min(a.y_max, b.y_max) - max(a.y_min, b.y_min))
    smaller = min(a.width * a.height, b.width * b.height)
    return w * h / smaller if smaller > 0 else 0.0


def _shift(face: Face, dx: float, dy: float, width: int, height: int) -> Face:
    """Moves a face found in a tile or padded copy into the image's coordinates."""
    b = face.box
    box = Box(b.x_min + dx, b.y_min + dy, b.x_max + dx, b.y_max + dy).clipped(width, height)
    marks = {k: (x + dx, y + dy) for k, (x, y) in face.landmarks.items()}
    return face.with_(box=box, landmarks=marks)
