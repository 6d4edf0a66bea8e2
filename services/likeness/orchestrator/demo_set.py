"""The demo candidate set of `make demo`: real photos that ship inside installed packages, augmented
so that the curate job meets every rejection reason, written in the import layout
`<out_dir>/<seed>/<image_type>/<name>.png` (+ a same-name `.txt` caption) with a `manifest.json`.

A "seed" here stands for one generation seed of seed doc 000: one identity (a portrait cropped
from skimage's astronaut or of one of the people of insightface's t1.jpg group photo) and
everything "generated" for it:
- `original` (3 per seed): the portrait, its mirror image, a close-up;
- `scenario` (5 kept per seed): a wide crop, a tilted head, changed light, a backdrop composite, a
  black-and-white version;
- `scenario` (6 rejected per seed): no face, two faces, a face too small, a head turned away, a
  face too blurred to be seen (no_face; low_confidence for one person), an underexposed or flat
  photo (blurry: its face falls under the blur gate; low_quality for the astronaut).

Every expected outcome is the verdict of the detection service's defaults (BlazeFace full range,
flip averaging, face mesh, ValidationPolicy 0.08 / 45 / 35 / 0.6 with the blur gate, detector
floor 0.5) plus the curate job's `min_quality` gate at `DEMO_MIN_QUALITY`; tests/orchestrator/test_demo_set.py checks each file
against the detection domain code. The per-identity numbers below (blur radius, paste size and
place) were tuned against that detector: a face's confidence is not monotonic in blur or size,
so a value chosen for one photo does not carry over to another.

Near-duplicates: the portrait, its mirror image, the changed-light and the black-and-white versions
of one seed are the same picture to the curate job's duplicate removal (perceptual hashes 0 bits
apart, mirrors counted), so it keeps the best-scored of the four and rejects the other three as
`duplicate`; their `expected` stays the detection verdict (`kept`) and `duplicate_group` names the
group. The demo's curate spec turns the eye gate off: two of the six people (group_left,
group_right) look down, and an eye-aspect-ratio cannot tell lowered lids from closed eyes.

Deterministic: no randomness, Pillow resampling only, PNGs through `encode_png`; the same
software gives the same bytes (the manifest records each sha256). Needs scikit-image and
insightface installed (`make venv` installs both); only numpy and Pillow are imported otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from likeness.core.errors import FailedPrecondition, InvalidArgument
from likeness.core.images import encode_png

# The curate spec's `min_quality` for which the `low_quality` outcomes hold: with the detection
# service's default quality weights every kept file scores >= 0.53, every `low_quality` file <= 0.40.
DEMO_MIN_QUALITY = 0.45
KEPT = "kept"
MANIFEST = "manifest.json"
OUTCOMES = (KEPT, "no_face", "multiple_faces", "face_too_small", "turned_away", "low_confidence", "low_quality",
            "blurry")
BACKDROP = (118, 118, 118)  # fills the corners a rotation uncovers


# --- photos that ship in packages ---------------------------------------------------------------

def _rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return np.ascontiguousarray(a[..., :3]).astype(np.uint8)


@cache
def photo(name: str) -> np.ndarray:
    """`skimage:<name>` (astronaut, camera, coffee, ...) or `insightface:<file>` (t1.jpg,
    Tom_Hanks_54745.png) as HxWx3 uint8 RGB."""
    package, _, item = name.partition(":")
    if package == "skimage":
        try:
            from skimage import data
        except ImportError as e:
            raise FailedPrecondition("demo_set", "scikit-image is not installed (pip install -e '.[embedding]')") from e
        return _rgb(getattr(data, item)())
    if package == "insightface":
        spec = importlib.util.find_spec("insightface")  # locates the package without importing it
        if not spec or not spec.origin:
            raise FailedPrecondition("demo_set", "insightface is not installed (tools/install_extras.sh)")
        with Image.open(Path(spec.origin).parent / "data" / "images" / item) as im:
            return _rgb(np.asarray(im.convert("RGB")))
    raise InvalidArgument("demo_set", f"unknown photo '{name}'")


# --- pixel operations (Pillow only) -------------------------------------------------------------

def _pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a, "RGB")


def _arr(im: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(im.convert("RGB")))


@dataclass(frozen=True)
class Portrait:
    """A face in a source photo: its box (x, y, side) in source pixels."""

    name: str
    photo: str
    box: tuple[int, int, int]

    def crop(self, margin: float, side: int) -> np.ndarray:
        """A square `side` px crop around the face, `margin` face sides wide, centred a little
        below the box (portraits show the chin and neck)."""
        x, y, face = self.box
        cx, cy, half = x + face / 2, y + face / 2 + 0.15 * face, face * margin / 2
        left, top = int(round(cx - half)), int(round(cy - half))
        size = int(round(2 * half))
        source = photo(self.photo)
        h, w = source.shape[:2]
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + size, w), min(top + size, h)
        window = source[y0:y1, x0:x1]
        pad = ((y0 - top, top + size - y1), (x0 - left, left + size - x1), (0, 0))
        if any(p for pair in pad[:2] for p in pair):
            # beyond the photo's edge: its border pixels smeared outwards and blurred like a
            # shallow depth of field, so the crop still reads as one photo
            smeared = _pil(np.pad(window, pad, mode="edge")).filter(ImageFilter.GaussianBlur(size / 20))
            smeared.paste(_pil(np.ascontiguousarray(window)), (pad[1][0], pad[0][0]))
            window = _arr(smeared)
        window = _pil(np.ascontiguousarray(window))
        return _arr(window.resize((side, side), Image.LANCZOS))


def mirrored(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[:, ::-1])


def blurred(a: np.ndarray, radius: float) -> np.ndarray:
    return _arr(_pil(a).filter(ImageFilter.GaussianBlur(radius)))


def rotated(a: np.ndarray, degrees: float) -> np.ndarray:
    return _arr(_pil(a).rotate(degrees, Image.BICUBIC, fillcolor=BACKDROP))


def brightness(a: np.ndarray, factor: float) -> np.ndarray:
    return _arr(ImageEnhance.Brightness(_pil(a)).enhance(factor))


def contrast(a: np.ndarray, factor: float) -> np.ndarray:
    return _arr(ImageEnhance.Contrast(_pil(a)).enhance(factor))


def greyscale(a: np.ndarray) -> np.ndarray:
    return _arr(_pil(a).convert("L"))


def resized(a: np.ndarray, width: int, height: int) -> np.ndarray:
    return _arr(_pil(a).resize((width, height), Image.LANCZOS))


def background(name: str, side: int) -> np.ndarray:
    """A square crop of a photo without people, scaled to `side`."""
    a = photo(name)
    s = min(a.shape[:2])
    return resized(np.ascontiguousarray(a[:s, :s]), side, side)


def pasted(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> np.ndarray:
    out = canvas.copy()
    h, w = patch.shape[:2]
    out[y:y + h, x:x + w] = patch
    return out


# --- what each seed holds -----------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    """One seed's person, plus the tuned parameters of its rejected variants."""

    portrait: Portrait
    description: str
    small: tuple[str, int, int, int]  # face_too_small: backdrop photo, portrait side, x, y on 512x512
    blur_radius: float  # out_of_focus: BlazeFace's score lands in [0.5, 0.6)
    backdrop: str  # the kept backdrop composite
    # what the blurred portrait gets: `no_face` where the face mesh sees no face in it (presence
    # < 0.5, so the detection is dropped), `low_confidence` where it still does
    out_of_focus: str = "no_face"
    # what the dark or flat portrait gets: `blurry` where its face sharpness at 128x128 falls under
    # the blur gate (which comes before the quality gate), `low_quality` where it does not
    degraded: str = "blurry"


GROUP = "insightface:t1.jpg"
IDENTITIES: tuple[Identity, ...] = (
    Identity(Portrait("astronaut", "skimage:astronaut", (174, 69, 106)), "a woman astronaut",
             ("skimage:rocket", 112, 200, 200), 8.5, "skimage:brick", degraded="low_quality"),
    Identity(Portrait("group_second_row", GROUP, (737, 365, 95)), "a man with short dark hair",
             ("skimage:gravel", 100, 120, 80), 12.25, "skimage:brick"),
    Identity(Portrait("group_centre", GROUP, (458, 288, 116)), "a dark-haired man",
             ("skimage:rocket", 94, 300, 120), 8.75, "skimage:grass"),
    Identity(Portrait("group_left", GROUP, (57, 276, 112)), "a blonde woman",
             ("skimage:brick", 106, 300, 120), 7.25, "skimage:grass", out_of_focus="low_confidence"),
    Identity(Portrait("group_right", GROUP, (1123, 291, 100)), "a blonde woman",
             ("skimage:brick", 112, 200, 200), 7.75, "skimage:brick"),
)
# t1.jpg's sixth person ("group_back", box (263, 168, 108)) was a seed until pose came from the face
# mesh: it reads her yaw at 45-50 degrees, as turned as the turned heads, so every portrait of her
# was TURNED_AWAY.
# The second face of every `multiple_faces` file, no seed's identity. (Its photo is a 112 px
# aligned face crop: too tight for the wide crops of a seed's portraits.)
PARTNER = Portrait("tom_hanks", "insightface:Tom_Hanks_54745.png", (6, 15, 95))
# Heads turned away for real (yaw 50-58 degrees): 2-D warps of a frontal face move BlazeFace's
# landmark-based yaw by only ~15 degrees, so the turned heads come from photos.
TURNED = (Portrait("group_standing", GROUP, (874, 73, 129)), Portrait("cameraman", "skimage:camera", (206, 124, 68)))
HEADLESS = "skimage:astronaut"  # its lower half: a space suit and a flag, no face
NO_FACE_PHOTOS = ("skimage:coffee", "skimage:rocket", "skimage:chelsea", "skimage:gravel", "skimage:grass", HEADLESS)


@dataclass(frozen=True)
class Recipe:
    image_type: str
    name: str
    source: str
    augmentation: str
    expected: str
    caption: str
    render: Callable[[], np.ndarray] = field(compare=False)


def _turned_away(index: int) -> tuple[str, str, Callable[[], np.ndarray]]:
    """One of six real turned heads, by seed position: (source, augmentation, render)."""
    standing, cameraman = TURNED
    options = (
        (standing, "crop 2.0 face sides, 320 px", lambda: standing.crop(2.0, 320)),
        (cameraman, "crop 2.0 face sides, 320 px", lambda: cameraman.crop(2.0, 320)),
        (standing, "crop 2.4 face sides, 320 px, mirrored", lambda: mirrored(standing.crop(2.4, 320))),
        (cameraman, "crop 3.2 face sides, 320 px, brightness x1.2",
         lambda: brightness(cameraman.crop(3.2, 320), 1.2)),
        (standing, "crop 3.2 face sides, 320 px", lambda: standing.crop(3.2, 320)),
        (standing, "crop 2.0 face sides, 320 px, brightness x1.2, mirrored",
         lambda: mirrored(brightness(standing.crop(2.0, 320), 1.2))),
    )
    who, augmentation, render = options[index % len(options)]
    return f"{who.photo} ({who.name})", augmentation, render


def recipes(index: int) -> list[Recipe]:
    """The 14 candidates of the seed at `index` (0-based position in IDENTITIES)."""
    ident = IDENTITIES[index]
    p = ident.portrait
    src = f"{p.photo} ({p.name})"
    who = ident.description
    light, light_name = (1.25, "bright light") if index % 2 == 0 else (0.75, "evening light")
    tilt = -10 if index % 2 == 0 else 10
    bg_photo, side, x, y = ident.small
    no_face = NO_FACE_PHOTOS[index % len(NO_FACE_PHOTOS)]
    turned_source, turned_aug, turned_render = _turned_away(index)
    o, s = "original", "scenario"
    return [
        Recipe(o, "portrait", src, "crop 2.8 face sides, 320 px", KEPT, f"portrait of {who}",
               lambda: p.crop(2.8, 320)),
        Recipe(o, "portrait_mirrored", src, "crop 2.8 face sides, 320 px, mirrored", KEPT,
               f"portrait of {who}", lambda: mirrored(p.crop(2.8, 320))),
        Recipe(o, "close_up", src, "crop 2.2 face sides, 384 px", KEPT, f"close-up portrait of {who}",
               lambda: p.crop(2.2, 384)),
        Recipe(s, "wide", src, "crop 3.6 face sides, 384 px", KEPT, f"{who}, wide shot",
               lambda: p.crop(3.6, 384)),
        Recipe(s, "tilted", src, f"crop 2.8, 320 px, rotated {tilt} degrees", KEPT, f"{who}, head tilted",
               lambda: rotated(p.crop(2.8, 320), tilt)),
        Recipe(s, light_name.replace(" ", "_"), src, f"crop 2.8, 320 px, brightness x{light}", KEPT,
               f"{who}, {light_name}", lambda: brightness(p.crop(2.8, 320), light)),
        Recipe(s, "backdrop", f"{src} on {ident.backdrop}", "crop 2.8 at 240 px pasted at (104, 104) on 448 px",
               KEPT, f"{who} in front of a {ident.backdrop.partition(':')[2]} wall",
               lambda: pasted(background(ident.backdrop, 448), p.crop(2.8, 240), 104, 104)),
        Recipe(s, "black_and_white", src, "crop 2.8, 320 px, greyscale", KEPT, f"black and white photo of {who}",
               lambda: greyscale(p.crop(2.8, 320))),
        # rejected, one per reason
        Recipe(s, "no_person", no_face, "lower half, 512x256 px" if no_face == HEADLESS else "square crop, 384 px",
               "no_face", "a scene without a person",
               (lambda: np.ascontiguousarray(photo(no_face)[256:, :])) if no_face == HEADLESS
               else (lambda: background(no_face, 384))),
        Recipe(s, "two_people", f"{src} + {PARTNER.photo} ({PARTNER.name})",
               "a 256 px crop beside the partner's whole photo at 256 px", "multiple_faces",
               f"{who} and another person",
               lambda: np.concatenate([p.crop(2.8, 256), PARTNER.crop(1.2, 256)], axis=1)),
        Recipe(s, "far_away", f"{src} on {bg_photo}", f"crop 2.8 at {side} px pasted at ({x}, {y}) on 512 px",
               "face_too_small", f"{who}, far away",
               lambda: pasted(background(bg_photo, 512), p.crop(2.8, side), x, y)),
        Recipe(s, "turned_away", turned_source, turned_aug, "turned_away", "a person looking aside", turned_render),
        Recipe(s, "out_of_focus", src, f"crop 2.8, 320 px, Gaussian blur radius {ident.blur_radius}",
               ident.out_of_focus, f"{who}, out of focus", lambda: blurred(p.crop(2.8, 320), ident.blur_radius)),
        (Recipe(s, "underexposed", src, "crop 2.8, 320 px, brightness x0.2", ident.degraded, f"{who}, dark",
                lambda: brightness(p.crop(2.8, 320), 0.2)) if index % 2 == 0 else
         Recipe(s, "flat", src, "crop 2.8, 320 px, contrast x0.1", ident.degraded, f"{who}, washed out",
                lambda: contrast(p.crop(2.8, 320), 0.1))),
    ]


# --- the set ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoItem:
    seed: int
    image_type: str  # original | scenario
    name: str
    path: str  # relative to the set's root: <seed>/<image_type>/<name>.png
    source: str  # package photo(s) it was made from
    augmentation: str
    expected: str  # `kept` or the curate job's rejection reason
    caption: str
    sha256: str
    width: int
    height: int
    duplicate_group: str = ""  # items of one group: the curate job keeps one, rejects the rest as `duplicate`


# the recipes whose files are the same picture (perceptual hash) within a seed
DUPLICATE_GROUP = ("portrait", "portrait_mirrored", "bright_light", "evening_light", "black_and_white")


@dataclass(frozen=True)
class DemoSet:
    root: Path
    items: list[DemoItem]
    min_quality: float = DEMO_MIN_QUALITY  # the curate `min_quality` the `low_quality` outcomes need

    def counts(self) -> dict[str, int]:
        """Files per expected outcome (every outcome listed, zeros included)."""
        c = Counter(i.expected for i in self.items)
        return {o: c.get(o, 0) for o in OUTCOMES}

    def kept_per_seed(self) -> dict[int, dict[str, int]]:
        """seed -> image_type -> files expected to be kept."""
        out: dict[int, dict[str, int]] = {}
        for i in self.items:
            if i.expected == KEPT:
                out.setdefault(i.seed, {"original": 0, "scenario": 0})[i.image_type] += 1
        return out

    def manifest(self) -> dict:
        return {"layout": "<seed>/<image_type>/<name>.png", "min_quality": self.min_quality,
                "counts": self.counts(), "items": [asdict(i) for i in self.items]}


def build_demo_set(out_dir: Path, seeds: int = len(IDENTITIES)) -> DemoSet:
    """Writes `seeds` groups of 14 candidates (8 kept, 6 rejected: one per reason) under
    `out_dir` and returns their manifest (also written to `out_dir/manifest.json`).

    `out_dir` must be absent, empty, or a previous demo set (its files are replaced): a stray
    image in it would be imported as one more candidate and change the expected counts."""
    if not 1 <= seeds <= len(IDENTITIES):
        raise InvalidArgument("seeds", f"must be in [1, {len(IDENTITIES)}] (one identity per seed), got {seeds}")
    root = Path(out_dir)
    _clear_previous(root)
    items = []
    for index in range(seeds):
        seed = index + 1  # folder names 1..n: seed 0 is the import default for files outside the layout
        for r in recipes(index):
            pixels = r.render()
            png = encode_png(pixels)
            rel = f"{seed}/{r.image_type}/{r.name}.png"
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png)
            target.with_suffix(".txt").write_text(r.caption + "\n", encoding="utf-8")
            items.append(DemoItem(seed, r.image_type, r.name, rel, r.source, r.augmentation, r.expected, r.caption,
                                  hashlib.sha256(png).hexdigest(), pixels.shape[1], pixels.shape[0],
                                  f"{seed}/portrait" if r.name in DUPLICATE_GROUP else ""))
    demo = DemoSet(root, items)
    (root / MANIFEST).write_text(json.dumps(demo.manifest(), indent=1) + "\n", encoding="utf-8")
    return demo


def _clear_previous(root: Path) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise InvalidArgument("out_dir", f"'{root}' is a file, not a folder")
    manifest = root / MANIFEST
    if not manifest.exists():
        if any(root.iterdir()):
            raise InvalidArgument("out_dir", f"'{root}' is neither empty nor a previous demo set (no {MANIFEST})")
        return
    for entry in json.loads(manifest.read_text(encoding="utf-8")).get("items", []):
        png = root / entry["path"]
        png.unlink(missing_ok=True)
        png.with_suffix(".txt").unlink(missing_ok=True)
    manifest.unlink()
    leftovers = [p for p in root.rglob("*") if p.is_file()]
    if leftovers:
        raise InvalidArgument("out_dir", f"'{root}' holds {len(leftovers)} files that are not part of the "
                                         f"previous demo set, e.g. '{leftovers[0]}'")


def main() -> None:
    """`python -m likeness.orchestrator.demo_set OUT_DIR [SEEDS]`: builds the set, prints its counts."""
    import sys

    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m likeness.orchestrator.demo_set OUT_DIR [SEEDS]")
    demo = build_demo_set(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) == 3 else len(IDENTITIES))
    print(json.dumps({"root": str(demo.root), "files": len(demo.items), "min_quality": demo.min_quality,
                      "counts": demo.counts()}))


if __name__ == "__main__":
    main()
