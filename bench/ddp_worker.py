"""One rank of bench/training.py's data-parallel section (run under torchrun, or alone as 1 rank).

Trains tiny-sdxl LoRA steps on an in-memory dataset with the global batch split across the
ranks, and prints (rank 0) one JSON line: seconds per optimizer step and the share of a step
spent in the gradient all-reduce.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True)
    parser.add_argument("--batch", type=int, default=4, help="global batch")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    import dataclasses

    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(1)  # one core per rank
    from likeness.diffusion.pipelines import load_pipeline
    from likeness.training import distributed
    from likeness.training.dataset import Dataset, DatasetItem
    from likeness.training.spec import RunSpec, resolve
    from likeness.training.trainer import LoraTrainer

    ranks = distributed.join("gloo")
    rng = np.random.default_rng(0)
    items = tuple(DatasetItem(f"{i}.png", f"file:///d/{i}.png",
                              np.asarray(Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8))),
                              f"photo {i}", f"{i:064d}") for i in range(args.batch * 4))
    spec = resolve(RunSpec(base_model="tiny-sdxl", dataset_uri="d", trigger_token="ohwx", rank=16,
                           batch_size=args.batch, max_steps=args.steps + 2, seed=1),
                   native_resolution=64, tiny_model=True, default_executor="in_process", run_id="bench")
    spec = dataclasses.replace(spec, epochs=1000)
    pipe = load_pipeline(Path(args.models) / "tiny-sdxl", "sdxl")
    trainer = LoraTrainer(spec, pipe, "sdxl", Dataset("d", items, (), "d", "c"), ranks=ranks)
    reduce_seconds = [0.0]
    original = ranks.sum_gradients

    def timed_reduce(params):
        t0 = time.perf_counter()
        original(params)
        reduce_seconds[0] += time.perf_counter() - t0

    object.__setattr__(ranks, "sum_gradients", timed_reduce)  # frozen dataclass: instrument this one
    plan = trainer._plan(0)
    for pos in range(2):  # warm-up: first-call kernels, latent and text caches
        trainer.train_step(plan[pos], 1, pos)
    reduce_seconds[0] = 0.0
    t0 = time.perf_counter()
    for pos in range(2, 2 + args.steps):
        trainer.train_step(plan[pos % len(plan)], 1, pos)
    seconds = (time.perf_counter() - t0) / args.steps
    if ranks.is_main:
        print(json.dumps({"ranks": ranks.world_size, "step_seconds": seconds,
                          "allreduce_share": reduce_seconds[0] / args.steps / seconds}))
    distributed.leave(ranks)


if __name__ == "__main__":
    main()
