"""The generation domain: validate a request, skip work already in the store, batch the rest,
composite, write PNGs with metadata. Knows nothing of gRPC.

One request of `count` images is `count` units of work (seed, seed + 1, ...); each has a work id
(hash of its canonical inputs and the model digest) and is stored at `<output_prefix><work id>.png`.
A unit whose PNG exists is returned with `cached=True` and not regenerated.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from likeness.core import metrics
from likeness.core.errors import FailedPrecondition, InvalidArgument, ModelMissing, NotFound, require
from likeness.core.images import encode_png
from likeness.core.pngmeta import a1111_model_hash, format_parameters, lora_hashes, read_png_metadata
from likeness.core.store import StoredObject
from likeness.core.worker import ModelWorker
from likeness.core.workid import sha256_hex, work_id
from likeness.diffusion.lora import LoraFile, read_lora
from likeness.generation import presets, region
from likeness.generation.adapters import adapter_id
from likeness.generation.batching import DynamicBatcher
from likeness.generation.engines.base import BatchKey, ImageItem, ImageResult, Progress
from likeness.generation.models import BASE_KINDS, ModelManager, family_of
from likeness.generation.request import GenerationRequest, Limits, validate

log = logging.getLogger("likeness.generation")

MAX_PROMPT_TOKENS = 77  # CLIP context, BOS and EOS included
# A1111 names of the samplers (PNG `parameters`), by diffusers scheduler class
SAMPLER_LABELS = {"DDIMScheduler": "DDIM", "PNDMScheduler": "PLMS", "DPMSolverMultistepScheduler": "DPM++ 2M",
                  "EulerDiscreteScheduler": "Euler", "EulerAncestralDiscreteScheduler": "Euler a",
                  "LCMScheduler": "LCM"}


@dataclass
class GeneratedImage:
    stored: StoredObject
    seed: int
    work_id: str
    cached: bool
    data: bytes | None = None  # PNG bytes when the caller asked for them inline
    parameters: str = ""  # the A1111 `parameters` text written into the PNG


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    warnings: list[str]
    model_digest: str
    timings: dict = field(default_factory=dict)  # queue, text_encoding, denoising, decoding, batch_size
    lcm_lora: str = ""  # the LCM-LoRA the FAST preset ran with


@dataclass
class Plan:
    """A validated request resolved against its model: the batch key, the canonical inputs that
    make the work ids, and per image (unit) its seed, work id and store key."""

    req: GenerationRequest
    spec: object  # the model's ModelSpec
    key: BatchKey
    inputs: dict
    adapter_files: dict[str, LoraFile]
    refiner_name: str  # "" unless the request uses the refiner
    warnings: list[str]
    units: list[tuple[int, str]]  # (seed, work id)
    keys: list[str]
    adapters: list[str]  # ids of the request's own adapters (`adapter_files` may add the LCM-LoRA first)
    models: list[dict]  # provenance: every model that shapes the pixels (models_used)


class ImageGenerator:
    def __init__(self, manager: ModelManager, store, *, limits: Limits, max_batch: int, max_wait: float,
                 queue_capacity: int, max_lora_bytes: int, lora_budget_bytes: int):
        self.manager, self.store, self.limits = manager, store, limits
        self.max_lora_bytes = max_lora_bytes
        self._lora_budget = lora_budget_bytes
        self._lora_files: OrderedDict[str, LoraFile] = OrderedDict()  # parsed files, by adapter id
        self._lora_lock = threading.Lock()  # admission runs in several threads
        self._tokenizers: dict[str, list] = {}
        self.batcher = DynamicBatcher(self._run_batch, max_batch=max_batch, max_wait=max_wait,
                                      capacity=queue_capacity, on_depth=self._on_depth, on_batch=self._on_batch,
                                      on_hold=metrics.BATCH_HOLD.labels("generation").inc)
        metrics.QUEUE_CAPACITY.labels("generation", "all").set(queue_capacity)

    # -- the worker side ------------------------------------------------------------------------

    def _run_batch(self, key: BatchKey, items: list[ImageItem]) -> list[ImageResult]:
        model = self.manager.get(key.model)
        refiner = self.manager.get(key.refiner) if key.refiner else None
        if key.ip_adapter:
            spec = self.manager.spec(key.ip_adapter)
            folder = self.manager.repo.fetch(key.ip_adapter)
            self.manager.engine.set_ip_adapter(model, key.ip_adapter, folder, spec.config)
        else:
            self.manager.engine.set_ip_adapter(model, "")
        files = {aid: lora for item in items for aid, lora in item.adapter_files.items()}
        controlnets = [self.manager.controlnet(c[0]) for c in key.controls]
        results = self.manager.engine.run(model, refiner, key, items, files, controlnets)
        for phase in ("text_encoding", "denoising", "decoding"):
            metrics.GENERATION_PHASE.labels(key.model, phase).observe(results[0].timings[phase])
        _export_gpu_memory(self.manager.device)
        return results

    def _on_depth(self, depth: int) -> None:
        metrics.QUEUE_DEPTH.labels("generation", "all").set(depth)

    def _on_batch(self, key: BatchKey, size: int) -> None:
        metrics.BATCH_SIZE.labels(key.model).observe(size)

    @property
    def worker(self) -> ModelWorker:
        """The batch worker thread: model loads and unloads run there, so they never race a batch."""
        return self.batcher.worker

    # -- the request side -----------------------------------------------------------------------

    async def generate(self, req: GenerationRequest, progress: Progress | None = None) -> GenerationResult:
        """Resolve the request -> probe the store for finished units -> batch the rest -> store them.
        `progress(stage, done, total)` is called from the worker thread after each step."""
        plan = await self._resolve(req)
        images = await self._probe_cache(plan)
        todo = [i for i, image in enumerate(images) if image is None]
        timings: dict = {"queue": 0.0, "text_encoding": 0.0, "denoising": 0.0, "decoding": 0.0, "batch_size": 0}
        if todo:
            geometry = self._geometry(plan.req)
            results = await self._batch(plan, todo, geometry, progress)
            await self._store(plan, todo, geometry, results, images)
            first = results[0].timings
            timings = {**{k: first[k] for k in ("queue", "text_encoding", "denoising", "decoding")},
                       "batch_size": max(r.batch_size for r in results)}
        return GenerationResult(images, plan.warnings, plan.spec.digest, timings, plan.req.lcm_lora)

    async def _resolve(self, req: GenerationRequest) -> Plan:
        """Validates `req` against its model (presets, limits, refiner, IP-Adapter, adapters)."""
        spec = await asyncio.to_thread(self.manager.spec, req.model)
        if spec.kind not in BASE_KINDS:
            raise InvalidArgument("model", f"model '{req.model}' is of kind {spec.kind!r}; generation needs one "
                                           f"of {', '.join(BASE_KINDS)}")
        family = family_of(spec.kind)
        default_side = int(spec.config.get("default_size") or presets.DEFAULT_SIZE[family])
        refiner_name = str(spec.config.get("refiner") or "")
        limits = replace(self.limits, max_size=min(self.limits.max_size, int(spec.config.get("max_size") or 10**6)))
        lcm_name, lcm_warnings = await asyncio.to_thread(self._lcm_lora_for, req)
        req, warnings = validate(req, family, default_side, bool(refiner_name), limits, lcm_lora=lcm_name)
        warnings = lcm_warnings + warnings
        require_seed_room(req)
        refiner_spec = await asyncio.to_thread(self.manager.spec, refiner_name) if req.refiner else None
        ip_spec = None
        if req.reference_image is not None:
            ip_spec = await asyncio.to_thread(self._require_ip_adapter, spec, family)
        if req.adapters and not self.manager.engine.supports_adapters:
            raise FailedPrecondition("adapters", f"LoRA adapters need LIKENESS_GENERATION_ENGINE=torch; the "
                                                 f"{self.manager.engine.name} engine runs graphs of the base weights")
        warnings += await asyncio.to_thread(self._prompt_warnings, req)
        adapter_files = await asyncio.to_thread(self._load_adapters, req)
        lcm = await asyncio.to_thread(self._load_lcm_lora, req.lcm_lora) if req.lcm_lora else None
        control_specs = await asyncio.to_thread(self._control_specs, req, family)
        return self._plan(req, spec, warnings, refiner_name if req.refiner else "", refiner_spec, ip_spec,
                          adapter_files, control_specs, lcm)

    def _plan(self, req: GenerationRequest, spec, warnings: list[str], refiner_name: str, refiner_spec, ip_spec,
              adapter_files: dict[str, LoraFile], control_specs: list, lcm: tuple | None) -> Plan:
        """`adapter_files` are the request's own adapters; `lcm` (spec, adapter id, file) the LCM-LoRA."""
        adapters = list(adapter_files)
        key_adapters = tuple((aid, a.scale) for aid, a in zip(adapters, req.adapters, strict=True))
        if lcm is not None and lcm[1] not in adapter_files:  # runs first, at scale 1, under the request's own
            adapter_files = {lcm[1]: lcm[2], **adapter_files}
            key_adapters = ((lcm[1], 1.0), *key_adapters)
        key = BatchKey(model=req.model, task=req.task, width=req.width, height=req.height, steps=req.steps,
                       sampler=req.sampler, guidance_scale=req.guidance_scale,
                       strength=req.strength if req.task != "text-to-image" else None,
                       refiner=refiner_name, refiner_fraction=req.refiner_fraction, adapters=key_adapters,
                       reference_scale=req.reference_scale if ip_spec else None,
                       ip_adapter=ip_spec.name if ip_spec else "",
                       controls=tuple((c.model, c.scale, c.start, c.end) for c in req.controls))
        inputs = self._canonical_inputs(req, adapters, refiner_spec, ip_spec, control_specs)
        if lcm is not None:  # only then: work ids of other requests stay as they were
            inputs["lcm_lora"] = lcm[0].digest
        units = [(req.seed + i, work_id("generation", {**inputs, "seed": req.seed + i}, spec.digest))
                 for i in range(req.count)]
        return Plan(req, spec, key, inputs, adapter_files, refiner_name, warnings, units,
                    [f"{req.output_prefix}{wid}.png" for _, wid in units], adapters,
                    models_used(spec, refiner_spec, ip_spec))

    async def _probe_cache(self, plan: Plan) -> list[GeneratedImage | None]:
        """The units already in the store (`cached=True`); None where the unit is still to make."""
        existing = await asyncio.to_thread(lambda: [self.store.exists(k) for k in plan.keys])
        images: list[GeneratedImage | None] = [None] * len(plan.units)
        for i, found in enumerate(existing):
            if found:
                stored = await asyncio.to_thread(self.store.stat, plan.keys[i])
                png = await asyncio.to_thread(self.store.get, plan.keys[i])  # its `parameters` say what ran
                images[i] = GeneratedImage(stored, plan.units[i][0], plan.units[i][1], True,
                                           png if plan.req.return_inline else None,
                                           read_png_metadata(png).get("parameters", ""))
                metrics.ITEMS.labels("generation", "generate", "cached").inc()
        return images

    async def _batch(self, plan: Plan, todo: list[int], geometry, progress: Progress | None) -> list[ImageResult]:
        """Queues the units `todo` with the batcher; their results in order."""
        req, now = plan.req, time.monotonic()
        items = [ImageItem(seed=plan.units[i][0], prompt=req.prompt, negative_prompt=req.negative_prompt,
                           init_image=geometry[1], mask=geometry[2], noise_injection=req.noise_injection,
                           reference_image=req.reference_image, progress=progress, queued_at=now,
                           control_images=self._control_images(req, geometry),
                           adapter_files=plan.adapter_files) for i in todo]
        return await self.batcher.submit(plan.key, items)

    async def _store(self, plan: Plan, todo: list[int], geometry, results: list[ImageResult],
                     images: list[GeneratedImage | None]) -> None:
        """Composites, encodes (PNG with metadata) and stores each result into `images`."""
        req, spec = plan.req, plan.spec
        # the request's own adapters (the LCM-LoRA is named on its own line)
        extra = self._parameters_extra(req, {aid: plan.adapter_files[aid] for aid in plan.adapters}, plan.refiner_name)
        if spec.config.get("random_weights"):
            extra["Model stand-in"] = "random weights"

        def encode(i: int, result: ImageResult) -> tuple[bytes, str]:  # compositing + PNG: off the event loop
            seed, wid = plan.units[i]
            rgb = self._finish(req, geometry, result.rgb)
            parameters = self._parameters(req, spec, seed, extra)
            return encode_png(rgb, parameters, {**plan.inputs, "seed": seed, "model_digest": spec.digest,
                                                "work_id": wid, "models": plan.models}), parameters

        for i, result in zip(todo, results, strict=True):
            png, parameters = await asyncio.to_thread(encode, i, result)
            stored = await asyncio.to_thread(self.store.put, plan.keys[i], png, "image/png")
            images[i] = GeneratedImage(stored, plan.units[i][0], plan.units[i][1], False,
                                       png if req.return_inline else None, parameters)
            metrics.ITEMS.labels("generation", "generate", "generated").inc()

    # -- helpers --------------------------------------------------------------------------------

    def _geometry(self, req: GenerationRequest):
        """(region, init image at the denoising size, mask at that size) for image tasks."""
        if req.task == "text-to-image":
            return None, None, None
        if req.task == "image-to-image":
            h, w = req.init_image.shape[:2]
            init, _ = region.crop_for_denoising(req.init_image, None, (0, 0, w, h), req.width, req.height)
            return None, init, None
        box = region.mask_region(req.mask, req.crop_padding)
        init, mask = region.crop_for_denoising(req.init_image, req.mask, box, req.width, req.height)
        if not mask.any():
            raise InvalidArgument("mask", f"vanishes when its region is resized to {req.width}x{req.height}; "
                                          "use a larger mask or a smaller crop_padding")
        return box, init, mask

    def _finish(self, req: GenerationRequest, geometry, rgb: np.ndarray) -> np.ndarray:
        if req.task != "inpaint":
            return rgb
        if req.paste == "region":
            return region.paste_region(req.init_image, rgb, geometry[0])
        return region.paste_back(req.init_image, rgb, req.mask, geometry[0])

    def _require_ip_adapter(self, spec, family: str):
        """The IP-Adapter model for `spec` (model.yaml `config.ip_adapter`, else `ip-adapter-<family>`),
        or FAILED_PRECONDITION naming what is missing."""
        if not self.manager.engine.supports_reference:
            raise FailedPrecondition("reference_image",
                                     f"IP-Adapter guidance needs LIKENESS_GENERATION_ENGINE=torch; "
                                     f"the {self.manager.engine.name} graphs lack its attention layers")
        name = str(spec.config.get("ip_adapter") or f"ip-adapter-{family}")
        try:
            ip_spec = self.manager.spec(name)
        except NotFound:
            raise FailedPrecondition(
                "reference_image", f"reference-image guidance needs IP-Adapter weights: model '{name}' "
                f"(kind ip-adapter) is not in the model repository {self.manager.repo.root}") from None
        if ip_spec.kind != "ip-adapter":
            raise FailedPrecondition("reference_image", f"model '{name}' is of kind {ip_spec.kind!r}, not ip-adapter")
        self.manager.repo.fetch(name)  # ModelMissing names absent files before the request is queued
        return ip_spec

    def _prompt_warnings(self, req: GenerationRequest) -> list[str]:
        warnings = []
        for name, text in (("prompt", req.prompt), ("negative_prompt", req.negative_prompt)):
            if not text:
                continue
            counts = [len(tok(text, truncation=False, verbose=False).input_ids)
                      for tok in self._tokenizers_of(req.model)]
            if counts and max(counts) > MAX_PROMPT_TOKENS:
                warnings.append(f"{name}: {max(counts)} CLIP tokens, over the limit of {MAX_PROMPT_TOKENS}; "
                                f"truncated to the first {MAX_PROMPT_TOKENS - 2} (plus start/end tokens)")
        return warnings

    def _tokenizers_of(self, model: str) -> list:
        from likeness.diffusion.tokenizer import load_clip_tokenizer

        spec = self.manager.spec(model)
        if spec.digest not in self._tokenizers:
            folder = self.manager.repo.fetch(model)
            self._tokenizers[spec.digest] = [load_clip_tokenizer(folder / sub) for sub in ("tokenizer", "tokenizer_2")
                                             if (folder / sub / "tokenizer_config.json").is_file()]
        return self._tokenizers[spec.digest]

    def _lcm_lora_for(self, req: GenerationRequest) -> tuple[str, list[str]]:
        """The LCM-LoRA registered for the request's model when FAST could use it, and why not."""
        from likeness.diffusion.lcm import lcm_lora_for

        if req.quality_mode != presets.LCM_MODE:
            return "", []
        name = lcm_lora_for(self.manager.repo, req.model)
        if name and not self.manager.engine.supports_adapters:
            return "", [f"quality_mode fast: the LCM-LoRA {name!r} needs the torch engine; "
                        f"{self.manager.engine.name} runs the standard FAST preset"]
        return name, []

    def _load_lcm_lora(self, name: str) -> tuple:
        """(spec, adapter id, parsed file) of LCM-LoRA `name` from the model repository."""
        from likeness.diffusion.lcm import weight_file

        data = weight_file(self.manager.repo, name).read_bytes()
        aid = adapter_id(sha256_hex(data))
        return self.manager.repo.spec(name), aid, self._parsed_lora(aid, data, f"model {name}")

    def _parsed_lora(self, aid: str, data: bytes, field: str) -> LoraFile:
        """The parsed LoRA of `data`, from the LRU of parsed files (within the LoRA budget)."""
        with self._lora_lock:
            lora = self._lora_files.get(aid)
        if lora is None:
            lora = read_lora(data, field)
        with self._lora_lock:
            self._lora_files[aid] = lora
            self._lora_files.move_to_end(aid)
            while sum(f.nbytes for f in self._lora_files.values()) > self._lora_budget and len(self._lora_files) > 1:
                self._lora_files.popitem(last=False)
        return lora

    def _load_adapters(self, req: GenerationRequest) -> dict[str, LoraFile]:
        """Reads, size-checks and validates each adapter file; returns {id (sha-based): parsed file}
        in request order. Parsed files are kept (LRU, within the LoRA budget) for later requests;
        the returned ones travel with the request, so an eviction meanwhile cannot lose them."""
        ids: dict[str, LoraFile] = {}
        for i, adapter in enumerate(req.adapters):
            field = f"adapters[{i}].uri"
            size = self.store.stat(adapter.uri, field=field).size
            if size > self.max_lora_bytes:
                raise InvalidArgument(field, f"adapter is {size:,} bytes, over the limit of {self.max_lora_bytes:,}")
            data = self.store.get(adapter.uri, field=field)
            aid = adapter_id(sha256_hex(data))
            if aid in ids:
                raise InvalidArgument(field, "has the same content as an earlier adapter of this request")
            ids[aid] = self._parsed_lora(aid, data, field)
        return ids

    def _control_specs(self, req: GenerationRequest, family: str) -> list:
        """The ControlNet models of the request, checked: NOT_FOUND or INVALID_ARGUMENT naming the
        field; ModelMissing naming absent files, before the request is queued."""
        from likeness.diffusion.controlnet import KIND

        specs = []
        for i, c in enumerate(req.controls):
            field_name = f"controls[{i}].model"
            try:
                spec = self.manager.spec(c.model)
            except NotFound as exc:
                raise NotFound(field_name, f"ControlNet '{c.model}' is not in the model repository "
                                           f"{self.manager.repo.root}") from exc
            require(spec.kind == KIND, field_name, f"model '{c.model}' is of kind {spec.kind!r}, not {KIND}")
            require(spec.config.get("family", family) == family, field_name,
                    f"ControlNet '{c.model}' is for {spec.config.get('family')} models, not {family}")
            folder = Path(self.manager.repo.fetch(c.model))
            if not (folder / "config.json").is_file():  # the weights' folder without its model
                raise ModelMissing(c.model, str(folder / "config.json"))
            specs.append(spec)
        return specs

    @staticmethod
    def _control_images(req: GenerationRequest, geometry) -> tuple:
        """Each control image cut and resized like the init image (image tasks) or as given."""
        if req.task == "text-to-image":
            return tuple(c.image for c in req.controls)
        h, w = req.init_image.shape[:2]
        box = geometry[0] or (0, 0, w, h)
        return tuple(region.crop_for_denoising(c.image, None, box, req.width, req.height)[0] for c in req.controls)

    def _canonical_inputs(self, req: GenerationRequest, adapters: list[str], refiner_spec, ip_spec,
                          control_specs=()) -> dict:
        def digest(a):
            if a is None:
                return None
            return hashlib.sha256(np.ascontiguousarray(a).tobytes() + str(a.shape).encode()).hexdigest()

        return {"model": req.model, "task": req.task, "prompt": req.prompt, "negative_prompt": req.negative_prompt,
                "steps": req.steps, "guidance_scale": req.guidance_scale, "width": req.width, "height": req.height,
                "sampler": req.sampler, "strength": req.strength if req.task != "text-to-image" else None,
                "init_image": digest(req.init_image), "mask": digest(req.mask),
                "crop_padding": req.crop_padding, "noise_injection": req.noise_injection,
                "refiner": refiner_spec.digest if refiner_spec is not None else None,
                "refiner_fraction": req.refiner_fraction if refiner_spec is not None else None,
                "adapters": [[aid, a.scale] for aid, a in zip(adapters, req.adapters, strict=True)],
                "reference_image": digest(req.reference_image),
                "reference_scale": req.reference_scale if ip_spec is not None else None,
                "ip_adapter": ip_spec.digest if ip_spec is not None else None,
                # only when not the default, so the work ids (and stored images) of earlier requests hold
                **({"paste": req.paste} if req.paste != "mask" else {}),
                **({"controls": [[s.digest, digest(c.image), c.scale, c.start, c.end]
                                 for s, c in zip(control_specs, req.controls, strict=True)]} if req.controls else {})}

    def _parameters_extra(self, req: GenerationRequest, adapters: dict[str, LoraFile], refiner_name: str) -> dict:
        extra: dict = {}
        if req.task != "text-to-image":
            extra["Denoising strength"] = req.strength
        if req.task == "inpaint" and req.crop_padding:
            extra["Inpaint padding"] = req.crop_padding
        if req.refiner:
            extra["Refiner"] = refiner_name
            extra["Refiner switch at"] = round(1 - req.refiner_fraction, 4)
        if req.noise_injection:
            extra["Noise injection"] = req.noise_injection
        if req.reference_image is not None:
            extra["IP-Adapter scale"] = req.reference_scale
        if req.lcm_lora:
            extra["LCM-LoRA"] = req.lcm_lora
        if adapters:
            # A1111 names a LoRA by its file name; the scales travel in the `likeness` chunk
            extra["Lora hashes"] = lora_hashes([(PurePosixPath(a.uri.rstrip("/")).stem, f.addnet_hash)
                                                for a, f in zip(req.adapters, adapters.values(), strict=True)])
        return extra

    def _parameters(self, req: GenerationRequest, spec, seed: int, extra: dict) -> str:
        model = self.manager.loaded().get(req.model)
        cls = model.pipe.scheduler.config["_class_name"] if (model and req.sampler == "default") else None
        from likeness.diffusion.samplers import SAMPLERS

        name = cls or (SAMPLERS[req.sampler][0] if req.sampler in SAMPLERS else "EulerDiscreteScheduler")
        return format_parameters(req.prompt, req.negative_prompt, req.steps, SAMPLER_LABELS.get(name, name),
                                 req.guidance_scale, seed, req.width, req.height, req.model,
                                 model_hash=a1111_model_hash(spec.files, spec.checksums), extra=extra)


def models_used(spec, refiner_spec, ip_spec) -> list[dict]:
    """Provenance written into every PNG: each model that shaped the pixels, and whether it is a
    stand-in (model.yaml `random_weights: true`: the images are noise)."""
    out = []
    for role, s in (("generator", spec), ("refiner", refiner_spec), ("ip_adapter", ip_spec)):
        if s is not None:
            out.append({"role": role, "name": s.name, "backend": s.backend, "digest": s.digest,
                        "stand_in": "random weights" if s.config.get("random_weights") else ""})
    return out


def require_seed_room(req: GenerationRequest) -> None:
    from likeness.generation.request import MAX_SEED

    if req.seed + req.count - 1 > MAX_SEED:
        raise InvalidArgument("seed", f"seed + count - 1 = {req.seed + req.count - 1} exceeds the limit of {MAX_SEED}")


def _export_gpu_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        metrics.GPU_MEMORY.labels(device).set(torch.cuda.memory_allocated(torch.device(device)))
