"""Models of this pod: loaded on first use from the model repository, kept warm or unloaded after
idling, with their memory exported as a metric.

Every method that touches a pipeline runs on the batcher's single worker thread, so a model is
never unloaded while a batch uses it.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field

from likeness.core import metrics
from likeness.core.errors import FailedPrecondition
from likeness.diffusion.pipelines import derive_pipeline
from likeness.generation.adapters import AdapterCache

log = logging.getLogger("likeness.generation.models")

BASE_KINDS = ("sdxl", "sd15", "sdxl-inpaint", "sd15-inpaint")


def family_of(kind: str) -> str:
    return "sdxl" if kind.startswith("sdxl") else "sd15"


@dataclass
class LoadedModel:
    name: str
    spec: object  # core.modelrepo.ModelSpec
    pipe: object  # the pipeline for the model's main task
    memory_bytes: int
    adapters: AdapterCache
    last_used: float = field(default_factory=time.monotonic)
    ip_adapter: str = ""  # IP-Adapter loaded into the UNet now ("" = none)
    _derived: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The model's own scheduler config, kept apart: each batch installs a fresh scheduler on the
        # shared pipeline, and building "default" from the installed one's config would make it
        # whatever sampler the previous batch used (outputs would depend on request history).
        scheduler = getattr(self.pipe, "scheduler", None)  # engines without one never swap samplers
        self.default_scheduler_config = dict(scheduler.config) if scheduler is not None else {}

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def family(self) -> str:
        return family_of(self.spec.kind)

    def pipeline(self, task: str):
        """The pipeline for `task`, sharing this model's components (built once per task)."""
        if task not in self._derived:
            self._derived[task] = derive_pipeline(self.pipe, self.kind, task)
        return self._derived[task]

    def control_pipeline(self, task: str, names: tuple[str, ...], controlnets: list):
        """The ControlNet pipeline for `task` with the ControlNets `names` (built once per set)."""
        from likeness.diffusion.controlnet import derive_control_pipeline

        key = ("controlnet", task, names)
        if key not in self._derived:
            self._derived[key] = derive_control_pipeline(self.pipe, self.family, task, controlnets)
        return self._derived[key]

    def forget_derived(self) -> None:
        """Derived pipelines are rebuilt (they must see an image encoder added or removed)."""
        self._derived.clear()


def module_bytes(pipe) -> int:
    import torch

    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in (*component.parameters(), *component.buffers()))
    return total


class ModelManager:
    def __init__(self, repo, engine, *, keep_warm: list[str], idle_unload_seconds: float, lora_budget_bytes: int,
                 device: str = "cpu"):
        self.repo, self.engine = repo, engine
        self.keep_warm = list(keep_warm)
        self.idle_unload_seconds = idle_unload_seconds
        self.lora_budget_bytes = lora_budget_bytes
        self.device = device
        self._loaded: dict[str, LoadedModel] = {}
        self._controlnets: dict[str, object] = {}

    def controlnet(self, name: str):
        """The ControlNet module `name`, loaded once on the engine's device and dtype (worker thread)."""
        if name not in self._controlnets:
            from likeness.diffusion.controlnet import load_controlnet

            self._controlnets[name] = load_controlnet(self.repo.fetch(name), name, dtype=self.engine.dtype,
                                                      device=self.engine.device)
            log.info("controlnet loaded", extra={"model": name, "engine": self.engine.name})
        return self._controlnets[name]

    def spec(self, name: str):
        """The model's spec; NotFound (from the repository) names the available models."""
        return self.repo.spec(name)

    def loaded(self) -> dict[str, LoadedModel]:
        return dict(self._loaded)

    def get(self, name: str) -> LoadedModel:
        """The loaded model, loading it now if needed (worker thread only)."""
        model = self._loaded.get(name)
        if model is None:
            spec = self.repo.spec(name)
            if spec.backend != "diffusers":
                raise FailedPrecondition("model", f"model '{name}' has backend {spec.backend!r}; "
                                                  "the generation service loads `diffusers` models")
            started = time.monotonic()
            folder = self.repo.fetch(name)
            pipe = self.engine.load(folder, spec)
            model = LoadedModel(name, spec, pipe, module_bytes(pipe), AdapterCache(self.lora_budget_bytes))
            self._loaded[name] = model
            metrics.MODEL_MEMORY.labels("generation", name, self.device).set(model.memory_bytes)
            log.info("model loaded", extra={"model": name, "kind": spec.kind, "digest": spec.digest[:16],
                                            "memory_bytes": model.memory_bytes, "engine": self.engine.name,
                                            "seconds": round(time.monotonic() - started, 3)})
        model.last_used = time.monotonic()
        return model

    def unload(self, name: str) -> bool:
        model = self._loaded.pop(name, None)
        if model is None:
            return False
        model.adapters.clear()
        del model
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        metrics.MODEL_MEMORY.labels("generation", name, self.device).set(0)
        log.info("model unloaded", extra={"model": name})
        return True

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Unloads models idle for `idle_unload_seconds` that are not kept warm."""
        if self.idle_unload_seconds <= 0:
            return []
        now = time.monotonic() if now is None else now
        idle = [n for n, m in self._loaded.items()
                if n not in self.keep_warm and now - m.last_used >= self.idle_unload_seconds]
        for name in idle:
            self.unload(name)
        return idle

    def unload_all(self) -> None:
        for name in list(self._loaded):
            self.unload(name)
