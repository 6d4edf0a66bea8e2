"""The open_eyes job's own overhead on a tiny-sdxl run: everything the job does besides the inpaint
and restore model work, as a share of the job's wall time, measured side by side in one run.

    python bench/open_eyes.py [--reps 3] [--variations 4] [--size 1024] [--png-level0]
    python bench/open_eyes.py --model-dir /tmp/i13-sdxl/models --model sdxl-shaped --dtype bfloat16 --threads 2
        --steps 2 --variations 1 --reps 3   (the same job at SDXL's size: ~20 min, ~10 GiB)

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
Everything runs pinned to one core, one thread per library (with --threads N: N cores, and N torch
threads for generation).

Per round, side by side, also: the runner's time outside every stage (its fixed cost) and one bare
Generate call's own overhead share ((its wall - the engine's run) / its wall), the floor of any job
that makes one service call at this model's size. --model/--model-dir run the jobs and the bare call
on another model (sdxl-shaped: the full-size SDXL architecture with random weights, whose images are
noise and whose compute is SDXL's); the services are warmed by a tiny-sdxl job first and the model
is loaded by one 64 px call before the rounds. At 1 step with the inpaint strength 0.99, diffusers
runs no denoising step (int(1 x 0.99) = 0) and refuses: --steps 2 is one denoising step.
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
from sdxl_shaped import PeakRss  # noqa: E402

TARGET = 0.05  # the job's own overhead, as a share of the job's wall
TINY = "tiny-sdxl"
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
    parser.add_argument("--model", default=TINY, help="the generation model the jobs use")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a model repository folder holding --model (linked into the stack's repository)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the generation service; the process is pinned to as many cores")
    parser.add_argument("--dtype", default="auto", help="the generation service's dtype (bfloat16 for sdxl-shaped)")
    args = parser.parse_args()
    machine = Machine()
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:max(args.threads, 1)]))

    import cv2
    import numpy as np
    import psutil

    from tests.photos import skimage_photo

    cv2.setNumThreads(1)
    photo = np.ascontiguousarray(cv2.resize(skimage_photo("astronaut"), (args.size, args.size),
                                            interpolation=cv2.INTER_CUBIC))
    print(f"# memory available at the start: {psutil.virtual_memory().available / 2**30:.1f} GiB", flush=True)
    clock = ModelClock()
    with (tempfile.TemporaryDirectory(prefix="bench-open-eyes-") as tmp, PeakRss() as memory,
          InProcessStack(Path(tmp), clock, args.model, args.model_dir, args.threads, args.dtype) as stack):
        def job(restore: bool, n: int, model: str = "") -> dict:
            return stack.open_eyes(photo, n, restore=restore, variations=args.variations, steps=args.steps,
                                   model=model)

        def bare(r: int) -> dict:
            return stack.bare_inpaint(photo, r, variations=args.variations, steps=args.steps)

        job(True, 0, TINY)  # warm: model loads, lazy imports, first-call compilation
        bare(0)
        if args.model != TINY:
            stack.load_model()
        rounds: dict[str, list[dict]] = {"restore": [], "no_restore": [], "bare": [], "level0": [], "load": []}
        for r in range(1, 1 + max(args.reps, 3)):
            rounds["load"].append(os.getloadavg()[0])
            rounds["restore"].append(job(True, 3 * r))
            rounds["no_restore"].append(job(False, 3 * r + 1))
            rounds["bare"].append(bare(r))
            if args.png_level0:
                with png_level(0):
                    rounds["level0"].append(job(True, 3 * r + 2))
            if args.model != TINY:  # a run cut short still leaves its rounds
                print(f"# round {r}: load {rounds['load'][-1]:.2f}, job walls {rounds['restore'][-1]['wall']:.1f} / "
                      f"{rounds['no_restore'][-1]['wall']:.1f} s, bare call {rounds['bare'][-1]['client']:.1f} s",
                      flush=True)
    report(machine, args, rounds, memory.peak)


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


def per_round(rounds: dict[str, list[dict]]) -> dict[str, list[float]]:
    """Ratios of each round, side by side: the job's overhead share (everything counted, and less the
    detection models' passes), the share of the runner's time outside every stage (its fixed cost:
    lease, report views, manifest, job store), and the bare Generate call's own overhead share (its
    client wall less the engine's run, over its wall: the floor of one service call at this size)."""
    out: dict[str, list[float]] = {}
    for n, tag in (("restore", "on"), ("no_restore", "off")):
        out[f"job overhead, restore {tag}"] = [x["overhead"] / x["wall"] for x in rounds[n]]
        out[f"  less detection models, {tag}"] = [x["overhead_less_detection"] / x["wall"] for x in rounds[n]]
        out[f"  runner outside stages, {tag}"] = [(x["wall"] - sum(x["stages"].values())) / x["wall"]
                                                 for x in rounds[n]]
    out["bare Generate call overhead"] = [(x["client"] - x["inpaint"]) / x["client"] for x in rounds["bare"]]
    return out


def print_rounds(rounds: dict[str, list[dict]], ratios: dict[str, list[float]]) -> None:
    n = len(rounds["bare"])
    print("per round (share of the wall; target < 0.05 for the job's overhead):")
    print(f"  {'':<34}" + "".join(f"{'round ' + str(i + 1):>10}" for i in range(n)) + f"{'median':>10}{'spread':>14}")
    print(f"  {'load average (1 min) at its start':<34}" + "".join(f"{x:>10.2f}" for x in rounds["load"]))
    for label, values in ratios.items():
        print(f"  {label:<34}" + "".join(f"{x:>10.3f}" for x in values)
              + f"{statistics.median(values):>10.3f}{spread(values):>14}")
    walls = [x["client"] for x in rounds["bare"]]
    engine = [x["inpaint"] for x in rounds["bare"]]
    cells = [f"{w:.2f}/{e:.2f}" for w, e in zip(walls, engine, strict=True)]
    print(f"  {'bare call wall / engine run s':<34}" + "".join(f" {c:>9}" for c in cells))


def report(machine: Machine, args, rounds: dict[str, list[dict]], peak_gib: float) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in rounds[name])

    stand_in = "" if args.model == TINY else " (random weights: its images are noise, its compute is SDXL's)"
    print(f"# open_eyes on {args.model}{stand_in}, {args.dtype} weights, {args.threads} generation thread(s), "
          f"astronaut {args.size}x{args.size}, {args.variations} variations, steps "
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
    ratios = per_round(rounds)
    print_rounds(rounds, ratios)
    floor = ratios["bare Generate call overhead"]
    print(f"one bare Generate call's own overhead / its wall: {statistics.median(floor):.3f} ({spread(floor)}): "
          + ("above" if statistics.median(floor) > TARGET else "within") + f" the job's target of {TARGET}")
    print(f"peak resident memory of the process: {peak_gib:.1f} GiB")
    figures = {
        "bench": "open_eyes", "model": args.model, "dtype": args.dtype, "threads": args.threads,
        "size": args.size, "variations": args.variations, "steps": args.steps,
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
        "bare_engine_run_s": round(med("bare", "inpaint"), 4),
        "per_round": {k.strip(): [round(x, 4) for x in v] for k, v in ratios.items()},
        "bare_call_overhead_share": round(statistics.median(floor), 4),
        "load_per_round": [round(x, 2) for x in rounds["load"]], "peak_rss_gib": round(peak_gib, 2),
        **({"png_level0_restore_on": figures_level0} if rounds["level0"] else {}),
        "machine": machine.done(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
