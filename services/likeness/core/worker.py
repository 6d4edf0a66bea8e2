"""The one model worker every model-serving service uses.

Model inference runs on a single dedicated thread: the models are not thread-safe, a pod is sized
for one model's worth of compute, and loads or unloads can then never race a running inference.
Decoding and other CPU work run elsewhere (the image loader's pool, `asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from likeness.core import metrics, tracing


class ModelWorker:
    """`await worker.run(fn, *args)` runs `fn(*args)` on the worker thread; `count` records item
    outcomes under the service's name; `close` drops work not yet started."""

    def __init__(self, service: str, *, threads: int = 1, name: str = "model"):
        self.service = service
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"{service}-{name}")
        self._model = name == "model"  # model inference gets a `model.run` trace span; CPU pools do not

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._model:
            return await tracing.run_on_worker(self.executor, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def count(self, stage: str, outcome: str, n: int = 1) -> None:
        """Adds `n` items to `likeness_items_total{service, stage, outcome}`."""
        if n:
            metrics.ITEMS.labels(self.service, stage, outcome).inc(n)

    def close(self, *, wait: bool = False) -> None:
        self.executor.shutdown(wait=wait, cancel_futures=not wait)
