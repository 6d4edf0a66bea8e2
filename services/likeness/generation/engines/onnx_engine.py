"""The ONNX Runtime engine: plain batches run the UNet, VAE decoder and text encoders as ONNX graphs
(TensorRT or CUDA providers on GPU nodes); every other batch runs on a torch engine in the same pod.

It composes a `TorchEngine`, which loads each model as usual (weights on the configured device and
dtype). On first load the networks are exported from a float32 CPU copy (onnx_export.py) into
`<engine cache>/<model>-<digest[:16]>-x<exporter version>/`; later loads, in this process or any other
sharing the cache (one exports under a file lock, the others wait), reuse the files. Per batch:

- LoRA adapters or an IP-Adapter reference: the torch modules run (PEFT layers and IP-Adapter
  attention processors live there; the graphs hold the base weights only).
- a size or batch outside the graphs' shape profile (profiles.py), when profiles are enforced
  (`LIKENESS_GENERATION_PROFILE_ROUTING`: `auto` = with TensorRT configured, `always`): torch.
- otherwise the graphs: their `forward`s are installed on the shared modules for the duration of
  the batch (all batches run on the one worker thread), so schedulers, prompt encoding and the
  per-image generators are the torch engine's and the two paths differ only in the arithmetic of
  the networks; the parity tests bound that difference.

Memory: the torch weights stay loaded next to the graphs' sessions (the cost of serving adapter
batches without a reload); see docs/operations.md for the figures.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from likeness.core import metrics
from likeness.core.errors import FailedPrecondition
from likeness.generation import presets
from likeness.generation.engines import onnx_export
from likeness.generation.engines.base import Engine
from likeness.generation.engines.profiles import ShapeProfile, provider_options
from likeness.generation.engines.torch_engine import TorchEngine
from likeness.generation.models import family_of

log = logging.getLogger("likeness.generation.onnx")
_export_lock = threading.Lock()
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


class OnnxEngine(Engine):
    name = "onnxruntime"
    supports_adapters = True  # served by the composed torch engine
    supports_reference = True

    def __init__(self, settings):
        self.torch = TorchEngine(settings)
        self.device, self.dtype, self.cpu_threads = self.torch.device, self.torch.dtype, self.torch.cpu_threads
        self.providers = [p.strip() for p in settings.generation_onnx_providers.split(",") if p.strip()]
        self.cache_dir = Path(settings.generation_engine_cache_dir)
        self.max_images = getattr(settings, "generation_max_batch", 4)
        self.profile_sizes = (getattr(settings, "generation_profile_min_size", 0),
                              getattr(settings, "generation_profile_max_size", 0))
        routing = getattr(settings, "generation_profile_routing", "auto")
        self.enforce_profiles = routing == "always" or "TensorrtExecutionProvider" in self.providers
        self.batches: Counter[str] = Counter()  # batches by path: "onnx", "torch:<reason>"

    def describe(self) -> dict:
        return {**self.torch.describe(), "engine": self.name, "onnx_providers": self.providers,
                "engine_cache": str(self.cache_dir), "profiles_enforced": self.enforce_profiles}

    def profile_for(self, spec) -> ShapeProfile:
        config = spec.config or {}
        default_side = int(config.get("default_size") or presets.DEFAULT_SIZE[family_of(spec.kind)])
        return ShapeProfile.for_model(default_side, self.max_images, *self.profile_sizes,
                                      model_max=int(config.get("max_size") or 0))

    # -- loading --------------------------------------------------------------------------------

    def load(self) -> None:
        self.torch.load()

    def warmup(self) -> None:
        """Graphs are exported and their sessions opened per model, in `load_model`."""

    def load_model(self, folder, spec):
        pipe = self.torch.load_model(folder, spec)
        target = self.graph_folder(spec)
        names = ["unet", "vae_decoder", *(n for n in TEXT_ENCODERS if getattr(pipe, n, None) is not None)]
        with _export_lock, onnx_export.folder_lock(target):
            if any(not (target / f"{n}.onnx").is_file() for n in names):
                source = onnx_export.float32_cpu_copy(pipe, folder, spec.kind)
                self._export_missing(source, target, names)
                del source
        profile = self.profile_for(spec)
        graphs = {"profile": profile}
        for n in names:
            graphs[n] = self._session(target / f"{n}.onnx", target, profile, n, _graph_dims(pipe, n))
        pipe._likeness_graphs = graphs
        log.info("onnx graphs ready", extra={"model": spec.name, "folder": str(target), "providers": self.providers,
                                             "profile": profile.describe()})
        return pipe

    def graph_folder(self, spec) -> Path:
        """Where the model's graphs live: per model digest and exporter version."""
        return self.cache_dir / f"{spec.name}-{spec.digest[:16]}-x{onnx_export.exporter_version()}"

    def _export_missing(self, source, target: Path, names: list[str]) -> None:
        for n in names:
            path = target / f"{n}.onnx"
            if path.is_file():
                continue
            if n == "unet":
                onnx_export.export_unet(source, path)
            elif n == "vae_decoder":
                onnx_export.export_vae_decoder(source.vae, path, source.unet.config.in_channels)
            else:
                onnx_export.export_text_encoder(getattr(source, n), path)

    def _session(self, path: Path, cache: Path, profile: ShapeProfile, graph: str, dims: dict):
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise FailedPrecondition("LIKENESS_GENERATION_ONNX_PROVIDERS", f"providers {missing} are not available in "
                                     f"this onnxruntime build (available: {sorted(available)})")
        options = ort.SessionOptions()
        if self.cpu_threads:
            options.intra_op_num_threads = self.cpu_threads
            options.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), options,
                                    providers=provider_options(self.providers, profile, graph, dims, cache))

    # -- one batch ------------------------------------------------------------------------------

    def set_ip_adapter(self, model, name: str, folder=None, config: dict | None = None) -> None:
        self.torch.set_ip_adapter(model, name, folder, config)

    def route(self, model, refiner, key, images: int) -> str:
        """`onnx`, or `torch:<reason>` for a batch the graphs cannot serve."""
        if key.adapters:
            return "torch:adapters"
        if key.reference_scale is not None:
            return "torch:reference_image"
        if key.controls:
            return "torch:controlnet"
        if self.enforce_profiles:
            for m in (model, refiner):
                if m is not None and not m.pipe._likeness_graphs["profile"].covers(key.width, key.height, images):
                    return "torch:outside_profile"
        return "onnx"

    def run(self, model, refiner, key, items, files, controlnets=None):
        path = self.route(model, refiner, key, len(items))
        self.batches[path] += 1
        metrics.GENERATION_ENGINE_BATCHES.labels(key.model, path).inc()
        if path != "onnx":
            if path == "torch:outside_profile":
                log.warning("batch outside the graphs' shape profile: torch engine", extra={
                    "model": key.model, "width": key.width, "height": key.height, "images": len(items),
                    "profile": model.pipe._likeness_graphs["profile"].describe()})
            return self.torch.run(model, refiner, key, items, files, controlnets)
        with _graphs_installed(model.pipe), _graphs_installed(refiner.pipe if refiner else None):
            return self.torch.run(model, refiner, key, items, files)


def _graph_dims(pipe, graph: str) -> dict:
    if graph == "unet":
        config = pipe.unet.config
        dims = {"in_channels": config.in_channels, "cross_attention_dim": config.cross_attention_dim}
        if config.addition_embed_type == "text_time":
            text_dim, n_ids = onnx_export.unet_text_dims(pipe)
            dims.update(text_embeds=text_dim, time_ids=n_ids)
        return dims
    if graph == "vae_decoder":
        return {"latent_channels": pipe.vae.config.latent_channels}
    return {}


@contextmanager
def _graphs_installed(pipe):
    """The graphs replace the modules' forwards while the block runs; the torch forwards come back
    afterwards (adapter batches need them)."""
    if pipe is None:
        yield
        return
    graphs = pipe._likeness_graphs
    patched = [(pipe.unet, "forward", onnx_export.ort_unet_forward(graphs["unet"], pipe.unet)),
               (pipe.vae, "decode", _ort_vae_decode(graphs["vae_decoder"]))]
    for n in TEXT_ENCODERS:
        if n in graphs:
            encoder = getattr(pipe, n)
            patched.append((encoder, "forward", onnx_export.ort_text_forward(graphs[n], encoder)))
    for module, attr, fn in patched:
        setattr(module, attr, fn)
    try:
        yield
    finally:
        for module, attr, _ in patched:
            vars(module).pop(attr, None)


def _ort_vae_decode(session):
    """A replacement for `AutoencoderKL.decode` that runs the decoder graph."""
    import torch
    from diffusers.models.autoencoders.vae import DecoderOutput

    def decode(latents, return_dict=True, **_):
        out = session.run(None, {"latents": latents.detach().cpu().float().numpy()})[0]
        image = torch.from_numpy(np.ascontiguousarray(out)).to(latents.device, latents.dtype)
        return DecoderOutput(sample=image) if return_dict else (image,)

    return decode
