"""Image encoding and decoding costs, measured side by side in one run.

    python bench/images.py [--quick]

1. PNG compress level: encode time and size at levels 1 (our default), 3, 6 (Pillow's default) and 9,
   on a 1024x1024 photo (skimage astronaut, upscaled) and on 1024x1024 noise (what tiny-sdxl emits).
2. decode_image (all defensive checks, mode normalisation, copy to a writable array) vs a bare
   `Image.open(...).convert("RGB")` + `np.asarray`, on PNG and JPEG.
3. Metadata: splicing `parameters` + request chunks into an encoded PNG (pngmeta) vs encoding the
   pixels again with Pillow's PngInfo.
Timings interleave the variants so machine noise hits all of them; the median is reported.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services"))

from machine import Machine  # noqa: E402
from timing import MIN_REPS, interleaved, medians, spread_line, spreads  # noqa: E402

from likeness.core.images import decode_image, encode_jpeg, encode_png  # noqa: E402
from likeness.core.pngmeta import add_png_metadata, format_parameters  # noqa: E402


def photo(side: int) -> np.ndarray:
    try:
        from skimage import data

        img = Image.fromarray(data.astronaut())
    except ImportError:  # the base install has no scikit-image: a smooth synthetic gradient instead
        y, x = np.mgrid[0:512, 0:512]
        img = Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))
    return np.asarray(img.resize((side, side), Image.Resampling.BICUBIC))


SPREADS: dict[str, float] = {}  # max / min of every variant's rounds, for the JSON line


def timed(variants: dict, reps: int, what: str) -> dict:
    """Median seconds per call of each variant; their spreads go to SPREADS."""
    times = interleaved(variants, reps)
    SPREADS.update({f"{what} {k}": v for k, v in spreads(times).items()})
    return medians(times)


def noise(side: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)


def bare_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (< 30 s)")
    ap.add_argument("--side", type=int, default=1024)
    args = ap.parse_args()
    machine = Machine()
    reps = MIN_REPS if args.quick else 9
    figures: dict = {"side": args.side, "reps": reps}

    print(f"## PNG compress level ({args.side}x{args.side}, median of {reps})")
    print(f"{'image':<8}{'level':>6}{'encode ms':>11}{'size KiB':>10}{'time vs 6':>11}{'size vs 6':>11}")
    for label, arr in (("photo", photo(args.side)), ("noise", noise(args.side))):
        levels = (1, 3, 6, 9)
        t = timed({lv: (lambda lv=lv, a=arr: encode_png(a, compress_level=lv)) for lv in levels}, reps,
                  f"{label} encode")
        sizes = {lv: len(encode_png(arr, compress_level=lv)) for lv in levels}
        for lv in levels:
            print(f"{label:<8}{lv:>6}{t[lv] * 1e3:>11.1f}{sizes[lv] / 1024:>10.0f}"
                  f"{t[lv] / t[6]:>11.2f}{sizes[lv] / sizes[6]:>11.2f}")
            figures[f"png_{label}_l{lv}_ms"] = round(t[lv] * 1e3, 2)
            figures[f"png_{label}_l{lv}_kib"] = round(sizes[lv] / 1024, 1)
        figures[f"png_{label}_l1_time_vs_l6"] = round(t[1] / t[6], 3)
        figures[f"png_{label}_l1_size_vs_l6"] = round(sizes[1] / sizes[6], 3)

    print(f"\n## decode_image (defensive) vs bare Pillow decode ({args.side}x{args.side} photo)")
    print(f"{'format':<8}{'ours ms':>9}{'bare ms':>9}{'ratio':>8}")
    arr = photo(args.side)
    for fmt, data in (("PNG", encode_png(arr)), ("JPEG", encode_jpeg(arr))):
        t = timed({"ours": lambda d=data: decode_image(d, "image"), "bare": lambda d=data: bare_decode(d)}, reps,
                  f"{fmt} decode")
        ratio = t["ours"] / t["bare"]
        print(f"{fmt:<8}{t['ours'] * 1e3:>9.1f}{t['bare'] * 1e3:>9.1f}{ratio:>8.2f}")
        figures[f"decode_{fmt.lower()}_ratio"] = round(ratio, 3)
        figures[f"decode_{fmt.lower()}_ms"] = round(t["ours"] * 1e3, 2)

    print(f"\n## PNG metadata: splice chunks vs re-encode with PngInfo ({args.side}x{args.side} photo)")
    text = format_parameters("a portrait, soft light", "blurry", 30, "DPM++ 2M", 7.0, 1, args.side, args.side,
                             "sdxl-base", "31e35c80fc")
    request = {"prompt": "a portrait, soft light", "seed": 1, "steps": 30}
    png = encode_png(arr)

    def reencode():
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        info.add_text("likeness", json.dumps(request))
        with Image.open(io.BytesIO(png)) as img:
            img.save(io.BytesIO(), "PNG", pnginfo=info, compress_level=1)

    t = timed({"splice": lambda: add_png_metadata(png, text, request), "reencode": reencode}, reps, "metadata")
    print(f"{'splice ms':>10}{'re-encode ms':>14}{'ratio':>10}")
    print(f"{t['splice'] * 1e3:>10.3f}{t['reencode'] * 1e3:>14.1f}{t['splice'] / t['reencode']:>10.4f}")
    figures["meta_splice_ms"] = round(t["splice"] * 1e3, 3)
    figures["meta_splice_vs_reencode"] = round(t["splice"] / t["reencode"], 4)
    print("\n" + spread_line(SPREADS, reps))
    print(json.dumps({**figures, "spreads": SPREADS, "machine": machine.done()}))


if __name__ == "__main__":
    main()
