"""The open_eyes job's own overhead on a tiny-sdxl run: everything the job does besides the inpaint
and restore model work, as a share of the job's wall time, measured side by side in one run.

    python bench/open_eyes.py [--reps 3] [--variations 4] [--size 1024] [--png-level0]

(where the overhead goes: `py-spy record -f raw -o prof.txt -- python bench/open_eyes.py`)

Every service (detection, restoration, generation, orchestrator) runs in this process on its own
event loop (tests.helpers.ServiceThread) with the local stack's settings, over gRPC on loopback, so
the model calls can be timed by wrapping them:
- inpaint model work: the generation engine's `run` (one pipeline call for all variations: text
  encoding, denoising, VAE decoding, the diffusers pipeline's own pre-processing); its three phases
  are shown on their own row;
- restore model work: `restore_face` per variation (the restorer on the face crop and its feathered
  paste-back); the restorer's own call is shown on its own row.
Overhead = job wall - (inpaint + restore model work), where the job wall is the runner's attempt
(lease taken -> manifest, report and FINISHED written). Everything else is overhead: Detect (the
source and the verification of every variation), mask, crop, composite, image decodes/encodes,
store I/O, PNG metadata, report rendering, job store writes, batching waits, gRPC. The client's
wall (Submit -> the job seen finished) adds the runner's lease poll; it is shown, not targeted.
A second figure also takes out the detection service's model passes (the detector, the face mesh
with its iris model, the identity recognizer: `DETECTION_MODEL_CALLS` in open_eyes_stack.py), timed
per unit of work (the source Detect, the verifying Detect): model work the job must do to verify.

Side by side, round by round: the job with restore on, the job with restore off, and the bare
inpaint (one Generate call of the same request, straight to the generation service); with
`--png-level0`, a fourth: restore on with every PNG written at zlib level 0 (what writing the
intermediate images uncompressed would save). Every job gets its own source image (one pixel
changed) and seed, so no service cache and no finished work in the job store answers for it.
Everything runs pinned to one core, one thread per library.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))
sys.path.insert(0, str(ROOT))

from machine import Machine  # noqa: E402
from open_eyes_stack import InProcessStack, ModelClock, png_level  # noqa: E402

TARGET = 0.05  # the job's own overhead, as a share of the job's wall
STAGES = ["detect", "crop", "mask", "inpaint", "composite", "restore", "verify", "metadata"]  # the job's order


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds (>= 3)")
    parser.add_argument("--variations", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024, help="side of the (resized) astronaut photo")
    parser.add_argument("--steps", type=int, default=0, help="0: the preset's")
    parser.add_argument("--png-level0", action="store_true",
                        help="a fourth job per round (restore on) with every PNG written at zlib level 0")
    args = parser.parse_args()
    machine = Machine()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import cv2
    import numpy as np

    from tests.photos import skimage_photo

    cv2.setNumThreads(1)
    photo = np.ascontiguousarray(cv2.resize(skimage_photo("astronaut"), (args.size, args.size),
                                            interpolation=cv2.INTER_CUBIC))
    clock = ModelClock()
    with tempfile.TemporaryDirectory(prefix="bench-open-eyes-") as tmp, InProcessStack(Path(tmp), clock) as stack:
        def job(restore: bool, n: int) -> dict:
            return stack.open_eyes(photo, n, restore=restore, variations=args.variations, steps=args.steps)

        def bare(r: int) -> dict:
            return stack.bare_inpaint(photo, r, variations=args.variations, steps=args.steps)

        job(True, 0)  # warm: model loads, lazy imports, first-call compilation
        bare(0)
        rounds: dict[str, list[dict]] = {"restore": [], "no_restore": [], "bare": [], "level0": []}
        for r in range(1, 1 + max(args.reps, 3)):
            rounds["restore"].append(job(True, 3 * r))
            rounds["no_restore"].append(job(False, 3 * r + 1))
            rounds["bare"].append(bare(r))
            if args.png_level0:
                with png_level(0):
                    rounds["level0"].append(job(True, 3 * r + 2))
    report(machine, args, rounds)


STAGE_OF_WORK = {"detect": "detect", "verify": "verify"}  # the job's Detect calls, by unit of work


def by_stage(jobs: list[dict]) -> dict[str, tuple[float, float, float]]:
    """Overhead per job stage, the model calls taken out of the stages that hold them, and what
    runs outside every stage (the report, the manifest, the job store): (seconds, share of the wall,
    share of the wall with the detection models' passes taken out too), medians over the jobs."""
    def of(x: dict) -> dict[str, tuple[float, float]]:
        st = dict(x["stages"])
        model = {"inpaint": x["inpaint"], "restore": x["restore"]}
        detection = {STAGE_OF_WORK.get(w, w): sec for w, sec in x["detection"].items()}
        out = {(f"{k} (less model)" if k in model else k): (st[k] - model.get(k, 0.0), detection.get(k, 0.0))
               for k in sorted(st, key=lambda k: STAGES.index(k) if k in STAGES else len(STAGES))}
        out["outside stages"] = (x["wall"] - sum(st.values()), 0.0)
        return out

    per = [of(x) for x in jobs]

    def median(fn) -> float:
        return statistics.median(fn(p, x) for p, x in zip(per, jobs, strict=True))

    return {k: (median(lambda p, x, k=k: p.get(k, (0.0, 0.0))[0]),
                median(lambda p, x, k=k: p.get(k, (0.0, 0.0))[0] / x["wall"]),
                median(lambda p, x, k=k: (p.get(k, (0.0, 0.0))[0] - p.get(k, (0.0, 0.0))[1]) / x["wall"]))
            for k in per[0]}


def report(machine: Machine, args, rounds: dict[str, list[dict]]) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in rounds[name])

    print(f"# open_eyes on tiny-sdxl, astronaut {args.size}x{args.size}, {args.variations} variations, steps "
          f"{args.steps or 'preset'}; {len(rounds['restore'])} interleaved rounds, medians (spread min-max)")
    print(f"{'':<30}{'restore on':>14}{'restore off':>14}")
    rows = [("job wall (runner) s", "wall"), ("client wall (Submit->done) s", "client"),
            ("inpaint model (engine.run) s", "inpaint"), ("  of which phases s", "phases"),
            ("restore model (restore_face) s", "restore"), ("  of which restorer s", "restorer"),
            ("overhead s", "overhead")]
    for label, key in rows:
        print(f"{label:<30}{med('restore', key):>14.3f}{med('no_restore', key):>14.3f}")
    for work in STAGE_OF_WORK:
        cells = [statistics.median(x["detection"].get(work, 0.0) for x in rounds[n]) for n in ("restore", "no_restore")]
        print(f"{'detection models, ' + work + ' s':<30}{cells[0]:>14.3f}{cells[1]:>14.3f}")
    overhead_by_stage = {n: by_stage(rounds[n]) for n in ("restore", "no_restore")}
    print("where the overhead goes, medians: seconds, share of the job wall, and that share with the detection "
          "models' passes taken out too")
    print(f"  {'':<28}{'restore on':>26}{'restore off':>26}")
    for stage in overhead_by_stage["restore"]:
        cells = [overhead_by_stage[n].get(stage, (0.0, 0.0, 0.0)) for n in ("restore", "no_restore")]
        print(f"  {stage:<28}" + "".join(f"{sec:>8.3f} s {share:>6.1%} {less:>6.1%}   " for sec, share, less in cells))
    share = {n: [x["overhead"] / x["wall"] for x in rounds[n]] for n in ("restore", "no_restore")}
    less_detection = {n: [x["overhead_less_detection"] / x["wall"] for x in rounds[n]]
                      for n in ("restore", "no_restore")}
    strict = {n: [(x["wall"] - x["phases"] - x["restorer"]) / x["wall"] for x in rounds[n]]
              for n in ("restore", "no_restore")}
    print(f"overhead / job wall (everything but the inpaint engine's run and restore_face): restore on "
          f"{statistics.median(share['restore']):.3f} ({spread(share['restore'])}), off "
          f"{statistics.median(share['no_restore']):.3f} ({spread(share['no_restore'])}); target < {TARGET}")
    print(f"  also without the detection models' passes (detector, face mesh, recognizer): on "
          f"{statistics.median(less_detection['restore']):.3f} ({spread(less_detection['restore'])}), off "
          f"{statistics.median(less_detection['no_restore']):.3f} ({spread(less_detection['no_restore'])})")
    print(f"  counting only the engine's phases and the restorer as model work: on "
          f"{statistics.median(strict['restore']):.3f} ({spread(strict['restore'])}), off "
          f"{statistics.median(strict['no_restore']):.3f} ({spread(strict['no_restore'])})")
    bare_wall = med("bare", "client")
    if rounds["level0"]:
        level0 = [x["overhead"] / x["wall"] for x in rounds["level0"]]
        print(f"restore on, every PNG at level 0: job wall {med('level0', 'wall'):.3f} s (level 1: "
              f"{med('restore', 'wall'):.3f} s), overhead / job wall {statistics.median(level0):.3f} "
              f"({spread(level0)})")
        figures_level0 = {"wall_s": round(med("level0", "wall"), 4),
                          "overhead_share": round(statistics.median(level0), 4),
                          "overhead_share_spread": [round(min(level0), 4), round(max(level0), 4)]}
    print(f"job wall / bare inpaint call ({bare_wall:.3f} s): on {med('restore', 'wall') / bare_wall:.3f}, "
          f"off {med('no_restore', 'wall') / bare_wall:.3f}")
    figures = {
        "bench": "open_eyes", "size": args.size, "variations": args.variations, "steps": args.steps,
        "reps": len(rounds["restore"]), "target_overhead_share": TARGET,
        "overhead_share": {n: round(statistics.median(v), 4) for n, v in share.items()},
        "overhead_share_spread": {n: [round(min(v), 4), round(max(v), 4)] for n, v in share.items()},
        "overhead_share_phases_only": {n: round(statistics.median(v), 4) for n, v in strict.items()},
        "overhead_share_less_detection_models": {n: round(statistics.median(v), 4) for n, v in less_detection.items()},
        "overhead_share_less_detection_models_spread": {n: [round(min(v), 4), round(max(v), 4)]
                                                        for n, v in less_detection.items()},
        "seconds": {n: {k: round(med(n, k), 4) for k in ("wall", "client", "inpaint", "phases", "restore", "restorer",
                                                         "overhead", "overhead_less_detection")}
                    for n in ("restore", "no_restore")},
        "detection_model_s": {n: {w: round(statistics.median(x["detection"].get(w, 0.0) for x in rounds[n]), 4)
                                  for w in STAGE_OF_WORK} for n in ("restore", "no_restore")},
        "overhead_by_stage_s": {n: {k: round(v[0], 4) for k, v in by.items()} for n, by in overhead_by_stage.items()},
        "bare_inpaint_s": round(bare_wall, 4),
        **({"png_level0_restore_on": figures_level0} if rounds["level0"] else {}),
        "machine": machine.done(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
