"""LoRA adapters of one loaded model: loaded once, switched per batch, kept within a memory budget.

Adapters are identified by the sha256 of their file, so the same bytes under two URIs load once.
They are added as PEFT layers next to the base weights (never fused), so switching is
`set_adapters` and turning them off (`disable_lora`) gives back the base model bit for bit.
When the budget is exceeded, the least recently used adapters not needed by the current batch are
deleted from the pipeline. Runs on the worker thread only (no locking needed).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from likeness.core.errors import InvalidArgument
from likeness.diffusion.lora import LoraFile, load_into_pipeline

log = logging.getLogger("likeness.generation.adapters")


def adapter_id(sha256: str) -> str:
    return f"lora_{sha256[:16]}"


class AdapterCache:
    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._loaded: OrderedDict[str, int] = OrderedDict()  # id -> bytes, least recent first
        self.loads = 0  # adapters loaded into the pipeline so far (tests, metrics)

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    @property
    def bytes_in_use(self) -> int:
        return sum(self._loaded.values())

    def activate(self, pipe, wanted: tuple[tuple[str, float], ...], files: dict[str, LoraFile]) -> None:
        """Makes exactly `wanted` ((id, scale), ...) active on `pipe`; `files` holds the parsed
        adapters not loaded yet. No adapter, or every scale 0, disables LoRA entirely."""
        ids = [i for i, _ in wanted]
        for index, aid in enumerate(ids):
            if aid in self._loaded:
                self._loaded.move_to_end(aid)
                continue
            lora = files.get(aid)
            if lora is None:
                raise InvalidArgument(f"adapters[{index}]", f"adapter {aid} is not available to this worker")
            load_into_pipeline(pipe, lora, aid, field=f"adapters[{index}].uri")
            self._loaded[aid] = lora.nbytes
            self.loads += 1
            log.info("LoRA %s loaded (%d bytes, %s format)", aid, lora.nbytes, lora.format)
        self._evict(keep=set(ids), pipe=pipe)
        if not ids or all(scale == 0 for _, scale in wanted):
            if self._loaded:
                pipe.disable_lora()
            return
        pipe.enable_lora()
        pipe.set_adapters(ids, adapter_weights=[scale for _, scale in wanted])

    def _evict(self, keep: set[str], pipe) -> None:
        for aid in list(self._loaded):
            if self.bytes_in_use <= self.budget_bytes:
                return
            if aid in keep:
                continue
            pipe.delete_adapters(aid)
            del self._loaded[aid]
            log.info("LoRA %s unloaded (memory budget %d bytes)", aid, self.budget_bytes)

    def clear(self) -> None:
        self._loaded.clear()
