"""Data parallelism for the LoRA loop: one process per device, started by `torchrun`.

Semantics (docs/architecture/training.md): `spec.batch_size` is the GLOBAL micro-batch. Each
optimizer step's micro-batches are planned once, identically on every rank, and rank r trains
the items at positions r, r + world, r + 2*world ... of each micro-batch. Every random draw of an
item (noise, timestep, caption shuffle and dropout) is seeded by (run seed, step, micro-batch,
position in the global micro-batch), so which rank trains an item does not change what it sees.
Each rank's loss is its items' share of the global mean; gradients of the LoRA weights are summed
across ranks once per optimizer step (after the last micro-batch, as DistributedDataParallel does
under `no_sync`), so N ranks with per-rank batch b follow the trajectory of one process with batch
N*b up to float summation order, and the learning rate needs no rescaling.

Only rank 0 talks to the registry's write side and the store's checkpoints; a stop (CancelRun,
SIGTERM) is decided by rank 0 and agreed by every rank at each step.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

BACKENDS = ("auto", "gloo", "nccl")
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)  # rank 0 samples and evaluates while others wait


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank, world size, local rank and the backend in use."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list[tuple[int, object]]:
        """(position in the global list, item) of this rank's share."""
        return [(i, item) for i, item in enumerate(items) if i % self.world_size == self.rank]

    def sum_gradients(self, params: list) -> None:
        """Sums the gradients of `params` across ranks in one flat all-reduce (None counts as 0)."""
        if not self.distributed:
            return
        import torch
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for p, g in zip(params, _unflatten_dense_tensors(flat, grads), strict=True):
            p.grad = g.view_as(p).clone()

    def sum(self, value: float) -> float:
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def main_decides(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every rank (a stop must be taken by all ranks at the same step)."""
        if not self.distributed:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._device())
        dist.broadcast(t, src=0)
        return bool(t.item())

    def _device(self) -> str:
        return f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def choose_backend(requested: str, cuda: bool) -> str:
    """`auto`: NCCL where GPUs train, gloo on CPUs."""
    if requested == "auto":
        return "nccl" if cuda else "gloo"
    return requested


def backend_unavailable(backend: str) -> str | None:
    """Why `backend` cannot run in this process, or None."""
    import torch
    import torch.distributed as dist

    if backend not in BACKENDS:
        return f"{backend!r} is not one of {', '.join(BACKENDS)}"
    if not dist.is_available():
        return "this torch build has no torch.distributed"
    if backend == "nccl" and not (torch.cuda.is_available() and dist.is_nccl_available()):
        return "NCCL needs CUDA GPUs and a torch build with NCCL"
    if backend == "gloo" and not dist.is_gloo_available():
        return "this torch build has no gloo backend"
    return None


def join(requested_backend: str = "auto") -> Ranks:
    """Joins the process group torchrun describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR ...); a single process (no WORLD_SIZE) joins nothing."""
    world = env_world_size()
    if world <= 1:
        return Ranks()
    import torch
    import torch.distributed as dist

    backend = choose_backend(requested_backend, torch.cuda.is_available())
    why = backend_unavailable(backend)
    if why:
        from likeness.core.errors import FailedPrecondition

        raise FailedPrecondition("LIKENESS_TRAINING_DISTRIBUTED_BACKEND", f"{backend}: {why}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def leave(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
