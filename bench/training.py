"""LoRA training on tiny-sdxl through the real run path (registry, store, runner), one run.

    python bench/training.py [--quick]

1. Throughput: optimizer steps per second with default settings (batch 1, rank 16, 64 px).
2. Checkpoint + sampling overhead per epoch as a share of the epoch, with default settings
   (a checkpoint every epoch: LoRA in diffusers and kohya format, full state, a 2 x 2 sample grid
   of 4 steps). The dataset is 70 images (full, a typical curated set) or 12 (quick): the overhead is
   per epoch and an epoch grows with the dataset, so the share depends on the dataset size.
3. Resume: a run cancelled mid-epoch and continued from its saved state in a new run; the cost of
   restoring (download + load) in steps, and whether the final weights equal the uninterrupted
   run's bit for bit.
4. Rank: step time and LoRA file size at rank 4 / 16 / 64 (file size tracks rank).
5. Data parallel: optimizer steps per second of 1 rank vs 2 gloo ranks under torchrun (one core
   and one torch thread each, the same global batch of 4), and the share of a step spent in the
   gradient all-reduce; 3 interleaved repetitions, median.
All runs share one process and interleave with nothing else; the machine is shared, so absolute
times are indicative and the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services"))

import numpy as np  # noqa: E402
from machine import Machine  # noqa: E402
from PIL import Image  # noqa: E402
from timing import MIN_REPS, span, spread  # noqa: E402

from likeness.core.images import encode_png  # noqa: E402
from likeness.training.app import create_context  # noqa: E402
from likeness.training.runner import execute  # noqa: E402
from likeness.training.runs import TrainingRuns  # noqa: E402
from likeness.training.settings import TrainingSettings  # noqa: E402
from likeness.training.spec import RunSpec  # noqa: E402


def write_dataset(store, prefix: str, n: int) -> None:
    """n distinct 64x64 crops of scikit-image photos (or gradients without scikit-image)."""
    try:
        from skimage import data

        photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    except ImportError:
        y, x = np.mgrid[0:256, 0:256]
        photos = [np.stack([x % 256, y % 256, (x * k + y) % 256], -1).astype(np.uint8) for k in range(1, 5)]
    rng = np.random.default_rng(0)
    for i in range(n):
        src = photos[i % len(photos)]
        h, w = src.shape[:2]
        side = int(min(h, w) * rng.uniform(0.5, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        img = Image.fromarray(src[top:top + side, left:left + side]).resize((64, 64))
        store.put(f"{prefix}/img_{i:03d}.png", encode_png(np.asarray(img)), "image/png")
        store.put(f"{prefix}/img_{i:03d}.txt", f"photo {i}, tag {i % 7}, tag {i % 5}".encode(), "text/plain")


class RegisterOnly:
    """An executor that leaves the run QUEUED; the bench executes it itself."""

    def submit(self, run, dataset=None) -> None:
        pass


class Bench:
    def __init__(self, root: Path, images: int):
        models = Path(os.environ.get("LIKENESS_BENCH_MODELS", root / "models"))
        self.settings = TrainingSettings(
            store_uri=f"file://{root}/store", model_repository=f"file://{models}", model_cache_dir=str(root / "cache"),
            training_database_url=f"sqlite:///{root}/runs.db", metrics_enabled=False)
        self.ctx = create_context(self.settings)
        write_dataset(self.ctx.store, "datasets/bench", images)
        # StartRun's validation and registration, with the run then executed in this thread
        self.runs = TrainingRuns(self.ctx, {"in_process": RegisterOnly()}, "in_process")

    def run(self, cancel_at: int = 0, resume_from: str = "", **spec) -> str:
        """Registers and executes a run in this thread; `cancel_at` stops it after that step."""
        base = dict(base_model="tiny-sdxl", dataset_uri="datasets/bench", trigger_token="ohwx", rank=16, epochs=2,
                    seed=1)
        registry = self.ctx.registry
        run = self.runs.start(RunSpec(**{**base, **spec}), resume_from)
        cancel = threading.Event()
        if cancel_at:
            def watch():
                while not cancel.is_set():
                    if registry.progress(run.run_id)[1] >= cancel_at:
                        registry.request_cancel(run.run_id)  # as CancelRun does
                        cancel.set()
                    time.sleep(0.01)
            threading.Thread(target=watch, daemon=True).start()
        state = execute(self.ctx, run.run_id, cancel=cancel)
        cancel.set()
        assert state in ("succeeded", "cancelled"), registry.get(run.run_id).error
        return run.run_id


def final_weights(ctx, run_id: str) -> dict:
    from safetensors.torch import load_file

    ckpt = ctx.registry.get(run_id).checkpoints[-1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        ctx.store.get_to_file(ckpt.diffusers_weights.uri, path)
        return load_file(str(path))


def parallel_step(models: Path, ranks: int, steps: int) -> dict:
    """One bench/ddp_worker.py run: alone (1 rank) or under torchrun (2 ranks)."""
    worker = [str(Path(__file__).with_name("ddp_worker.py")), "--models", str(models), "--steps", str(steps)]
    if ranks == 1:
        command = [sys.executable, *worker]
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        command = [torchrun, "--standalone", "--nnodes", "1", "--nproc-per-node", str(ranks), *worker]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def data_parallel(models: Path, steps: int, figures: dict) -> None:
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(MIN_REPS):  # interleaved, so load drifts hit both alike
        for ranks in runs:
            runs[ranks].append(parallel_step(models, ranks, steps))
    one = statistics.median(r["step_seconds"] for r in runs[1])
    two = statistics.median(r["step_seconds"] for r in runs[2])
    share = statistics.median(r["allreduce_share"] for r in runs[2])
    spread_2 = spread([r["step_seconds"] for r in runs[2]])
    print(f"\n## data parallel: global batch 4, rank 16, 64 px; median of {MIN_REPS} ({steps} steps each)")
    print(f"{'ranks':>6}{'steps/s':>9}{'speed-up':>10}{'all-reduce share':>18}{'max/min':>9}")
    print(f"{1:>6}{1 / one:>9.2f}{1.0:>10.2f}{'-':>18}{'':>9}")
    print(f"{2:>6}{1 / two:>9.2f}{one / two:>10.2f}{share:>18.1%}{spread_2:>9.2f}")
    figures.update(dp_steps_per_second_1=round(1 / one, 3), dp_steps_per_second_2=round(1 / two, 3),
                   dp_speedup_2=round(one / two, 3), dp_allreduce_share=round(share, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 images, fewer ranks (< 30 s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (LIKENESS_TRAINING_TORCH_THREADS)")
    args = parser.parse_args()
    machine = Machine()
    import torch

    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    images = 8 if args.quick else 70
    figures: dict = {"images": images, "resolution": 64, "torch_threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        bench = Bench(Path(tmp), images)
        reg = bench.ctx.registry
        bench.run(epochs=1, max_steps=2, rank=4)  # warm-up: builds tiny-sdxl, first-call kernels

        # repetitions of one run each; their median and spread (the runs are alike: same seed)
        straights = [bench.run() for _ in range(MIN_REPS)]
        runs = [reg.get(rid) for rid in straights]
        straight, r = straights[0], runs[0]
        epochs = len(r.checkpoints)
        rates = [x.step / x.timings["train"] for x in runs]
        epoch_s = [x.timings["train"] / epochs for x in runs]
        ckpt_s = [x.timings["checkpoint"] / epochs for x in runs]
        sample_s = [x.timings["sampling"] / epochs for x in runs]
        shares = [(x.timings["checkpoint"] + x.timings["sampling"] + x.timings["evaluation"])
                  / (x.timings["train"] + x.timings["checkpoint"] + x.timings["sampling"] + x.timings["evaluation"])
                  for x in runs]
        steps_per_second, train_epoch, share = (statistics.median(v) for v in (rates, epoch_s, shares))
        print(f"## tiny-sdxl, {images} images of 64 px, batch 1, rank 16, 2 epochs ({r.step} steps), "
              f"{args.threads} torch thread(s); median of {MIN_REPS} runs")
        print(f"{'steps/s':>10}{'epoch s':>10}{'ckpt s':>9}{'samples s':>11}{'overhead share':>16}")
        print(f"{steps_per_second:>10.2f}{train_epoch:>10.2f}{statistics.median(ckpt_s):>9.3f}"
              f"{statistics.median(sample_s):>11.3f}{share:>16.1%}")
        print(f"runs: steps/s {span(rates, 2)}, overhead share {span(shares, 3)}")
        figures.update(steps_per_second=round(steps_per_second, 3), epoch_seconds=round(train_epoch, 3),
                       checkpoint_seconds=round(statistics.median(ckpt_s), 4),
                       sampling_seconds=round(statistics.median(sample_s), 4),
                       overhead_share_per_epoch=round(share, 4), overhead_share_runs=[round(x, 4) for x in shares],
                       steps_per_second_spread=round(spread(rates), 3))

        per_epoch = r.total_steps // 2
        cut = bench.run(cancel_at=per_epoch + per_epoch // 2)  # mid-epoch 2
        resumed = bench.run(resume_from=cut)
        rc = reg.get(resumed)
        step_s = 1 / steps_per_second
        restore = rc.timings["resume"]
        a, b = final_weights(bench.ctx, straight), final_weights(bench.ctx, resumed)
        exact = a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
        state_mb = rc.checkpoints[-1].state.size / 1e6
        print(f"\n## resume (cancelled at step {reg.get(cut).step} of {r.total_steps}, continued in a new run)")
        print(f"{'restore s':>10}{'= steps':>9}{'state MB':>10}{'setup s':>9}{'bit-identical':>15}")
        print(f"{restore:>10.3f}{restore / step_s:>9.2f}{state_mb:>10.2f}{rc.timings['setup']:>9.2f}{exact!s:>15}")
        figures.update(resume_restore_seconds=round(restore, 4), resume_cost_in_steps=round(restore / step_s, 3),
                       resume_setup_seconds=round(rc.timings["setup"], 3), state_megabytes=round(state_mb, 3),
                       resume_bit_identical=exact)

        ranks = (4, 16) if args.quick else (4, 16, 64)
        step_ms: dict[int, list[float]] = {rank: [] for rank in ranks}
        for _ in range(MIN_REPS):  # interleaved, so load drifts hit every rank alike
            for rank in ranks:
                rr = reg.get(bench.run(rank=rank, epochs=1))
                step_ms[rank].append(rr.timings["train"] / rr.step * 1e3)
                figures[f"rank{rank}_lora_bytes"] = rr.checkpoints[-1].diffusers_weights.size
        print(f"\n## rank (1 epoch each, median of {MIN_REPS} interleaved rounds)")
        print(f"{'rank':>6}{'step ms':>9}{'LoRA KB':>9}{'vs rank 4 time':>16}{'vs rank 4 size':>16}{'max/min':>9}")
        base = ranks[0]
        for rank in ranks:
            step, size = statistics.median(step_ms[rank]), figures[f"rank{rank}_lora_bytes"]
            print(f"{rank:>6}{step:>9.1f}{size / 1e3:>9.1f}{step / statistics.median(step_ms[base]):>16.2f}"
                  f"{size / figures[f'rank{base}_lora_bytes']:>16.2f}{spread(step_ms[rank]):>9.2f}")
            figures[f"rank{rank}_step_ms"] = round(step, 2)

        print(f"\n## torch threads: {args.threads} vs torch's default {default_threads} (1 epoch, rank 16, "
              f"median of {MIN_REPS} interleaved rounds)")
        timing: dict[int, list[tuple[float, float]]] = {args.threads: [], default_threads: []}
        for _ in range(MIN_REPS):
            for threads in timing:
                torch.set_num_threads(threads)
                rr = reg.get(bench.run(epochs=1))
                timing[threads].append((rr.timings["train"] / rr.step, rr.timings["sampling"]))
        torch.set_num_threads(args.threads)
        step_ratios = [a[0] / b[0] for a, b in zip(timing[args.threads], timing[default_threads], strict=True)]
        sampling_ratios = [a[1] / b[1] for a, b in zip(timing[args.threads], timing[default_threads], strict=True)]
        print(f"{'threads':>8}{'step ms':>9}{'samples s':>11}")
        for threads, runs_t in timing.items():
            print(f"{threads:>8}{statistics.median(x[0] for x in runs_t) * 1e3:>9.1f}"
                  f"{statistics.median(x[1] for x in runs_t):>11.3f}")
        print(f"step time ratio {span(step_ratios, 2)}, sampling ratio {span(sampling_ratios, 2)} (median (min-max))")
        figures["threads_step_ratio"] = round(statistics.median(step_ratios), 3)
        figures["threads_sampling_ratio"] = round(statistics.median(sampling_ratios), 3)
        data_parallel(Path(bench.settings.model_repository.removeprefix("file://")), 4 if args.quick else 12,
                      figures)
        reg.close()
    print(json.dumps({**figures, "machine": machine.done()}))


if __name__ == "__main__":
    main()
