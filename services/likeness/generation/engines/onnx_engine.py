"""The ONNX Runtime engine: the UNet, the VAE decoder and the text encoders run as ONNX graphs.

On first load of a model the two are exported from the torch modules (`torch.onnx.export`,
opset 17, dynamic batch and spatial axes; text encoders with dynamic batch) into
`<engine cache>/<model>-<digest[:16]>/`; later
loads reuse the files (a new model digest gets new files). Sessions use the providers from
`LIKENESS_GENERATION_ONNX_PROVIDERS`: the CPU provider here, CUDA or TensorRT on GPU nodes (the
TensorRT provider keeps its engine cache in the same folder). Everything else (schedulers, prompt
encoding, the per-image generators) is done by a torch engine this engine holds, so the two engines
differ only in the arithmetic of those two networks; the parity test bounds that difference.

LoRA adapters change UNet weights that are baked into the graph, so they need the torch engine.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import numpy as np

from likeness.core.errors import FailedPrecondition
from likeness.generation.engines.base import BatchKey, Engine, ImageItem, ImageResult
from likeness.generation.engines.torch_engine import TorchEngine

log = logging.getLogger("likeness.generation.onnx")
OPSET = 17
_export_lock = threading.Lock()


class OnnxEngine(Engine):
    name = "onnxruntime"
    supports_adapters = False
    supports_reference = False  # IP-Adapter adds attention processors the exported graph lacks

    def __init__(self, settings):
        self.torch = TorchEngine(settings, vae_decode=_ort_vae_decode)
        self.cpu_threads = self.torch.cpu_threads
        self.providers = [p.strip() for p in settings.generation_onnx_providers.split(",") if p.strip()]
        self.cache_dir = Path(settings.generation_engine_cache_dir)

    def load(self) -> None:
        self.torch.load()

    def warmup(self) -> None:
        """Graphs are exported and their sessions opened per model, in `load_model`."""

    def describe(self) -> dict:
        return {**self.torch.describe(), "engine": self.name, "onnx_providers": self.providers,
                "engine_cache": str(self.cache_dir)}

    def set_ip_adapter(self, model, name: str, folder=None, config: dict | None = None) -> None:
        self.torch.set_ip_adapter(model, name, folder, config)

    def load_model(self, folder, spec):
        pipe = self.torch.load_model(folder, spec)
        target = self.cache_dir / f"{spec.name}-{spec.digest[:16]}"
        unet_path, vae_path = target / "unet.onnx", target / "vae_decoder.onnx"
        with _export_lock:
            if not unet_path.is_file():
                export_unet(pipe.unet, unet_path, pipe.vae_scale_factor)
            if not vae_path.is_file():
                export_vae_decoder(pipe.vae, vae_path, pipe.unet.config.in_channels)
            for name in ("text_encoder", "text_encoder_2"):
                encoder = getattr(pipe, name, None)
                if encoder is not None and not (target / f"{name}.onnx").is_file():
                    export_text_encoder(encoder, target / f"{name}.onnx")
        unet_session = self._session(unet_path, target)
        pipe.unet.forward = _ort_unet_forward(unet_session, pipe.unet)
        pipe.vae._likeness_ort_decoder = self._session(vae_path, target)
        for name in ("text_encoder", "text_encoder_2"):
            encoder = getattr(pipe, name, None)
            if encoder is not None:
                encoder.forward = _ort_text_forward(self._session(target / f"{name}.onnx", target), encoder)
        log.info("onnx graphs ready", extra={"model": spec.name, "folder": str(target), "providers": self.providers})
        return pipe

    def run(self, model, refiner, key: BatchKey, items: list[ImageItem], files: dict) -> list[ImageResult]:
        if key.adapters:
            raise FailedPrecondition("adapters", "LoRA adapters need LIKENESS_GENERATION_ENGINE=torch; the ONNX "
                                                 "graphs hold the base weights only")
        return self.torch.run(model, refiner, key, items, files)

    def _session(self, path: Path, cache: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.cpu_threads:
            options.intra_op_num_threads = self.cpu_threads
            options.inter_op_num_threads = 1
        providers = []
        for p in self.providers:
            if p == "TensorrtExecutionProvider":
                providers.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache / "trt"),
                                      "trt_fp16_enable": True}))
            else:
                providers.append(p)
        available = set(ort.get_available_providers())
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise FailedPrecondition("LIKENESS_GENERATION_ONNX_PROVIDERS", f"providers {missing} are not available in "
                                     f"this onnxruntime build (available: {sorted(available)})")
        return ort.InferenceSession(str(path), options, providers=providers)


# -- export ------------------------------------------------------------------------------------

def _ort_vae_decode(vae, latents):
    """The VAE decoder as its ONNX session (set on the VAE by `OnnxEngine.load_model`)."""
    import torch

    session = vae._likeness_ort_decoder
    out = session.run(None, {"latents": latents.detach().cpu().float().numpy()})[0]
    return torch.from_numpy(out).to(latents.device, latents.dtype)


def _unet_wrapper(unet):
    import torch

    sdxl = unet.config.addition_embed_type == "text_time"

    class UNetForExport(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
            added = {"text_embeds": text_embeds, "time_ids": time_ids} if sdxl else None
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                             added_cond_kwargs=added, return_dict=False)[0]

    return UNetForExport().eval(), sdxl


def export_unet(unet, path: Path, vae_scale_factor: int) -> Path:
    import torch

    wrapper, sdxl = _unet_wrapper(unet)
    side = max(8, unet.config.sample_size)
    sample = torch.randn(2, unet.config.in_channels, side, side)
    timestep = torch.tensor([999.0])
    hidden = torch.randn(2, 77, unet.config.cross_attention_dim)
    args, names = [sample, timestep, hidden], ["sample", "timestep", "encoder_hidden_states"]
    axes = {"sample": {0: "batch", 2: "height", 3: "width"}, "encoder_hidden_states": {0: "batch"},
            "noise_pred": {0: "batch", 2: "height", 3: "width"}}
    if sdxl:
        text_dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        n_ids = 6
        expected = text_dim + n_ids * unet.config.addition_time_embed_dim
        if text_dim <= 0 or unet.add_embedding.linear_1.in_features != expected:
            n_ids = 5  # refiner: aesthetic score instead of target size
            text_dim = unet.config.projection_class_embeddings_input_dim - 5 * unet.config.addition_time_embed_dim
        args += [torch.randn(2, text_dim), torch.ones(2, n_ids)]
        names += ["text_embeds", "time_ids"]
        axes.update(text_embeds={0: "batch"}, time_ids={0: "batch"})
    return _export(wrapper, tuple(args), names, ["noise_pred"], axes, path)


def export_vae_decoder(vae, path: Path, latent_channels: int) -> Path:
    import torch

    class DecoderForExport(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae

        def forward(self, latents):
            return self.vae.decode(latents, return_dict=False)[0]

    latents = torch.randn(1, latent_channels, 8, 8)
    axes = {"latents": {0: "batch", 2: "height", 3: "width"}, "image": {0: "batch", 2: "h", 3: "w"}}
    return _export(DecoderForExport().eval(), (latents,), ["latents"], ["image"], axes, path)


def export_text_encoder(encoder, path: Path) -> Path:
    """CLIP text encoder -> graph with outputs (first output, last hidden state, penultimate hidden
    state): what SD 1.5 (`[0]`) and SDXL (`hidden_states[-2]`, pooled `text_embeds`) read."""
    import torch

    class EncoderForExport(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids):
            out = self.encoder(input_ids, output_hidden_states=True)
            return out[0], out.last_hidden_state, out.hidden_states[-2]

    ids = torch.ones(1, encoder.config.max_position_embeddings, dtype=torch.int64)
    axes = {"input_ids": {0: "batch"}, "first": {0: "batch"}, "last_hidden_state": {0: "batch"},
            "penultimate": {0: "batch"}}
    return _export(EncoderForExport().eval(), (ids,), ["input_ids"], ["first", "last_hidden_state", "penultimate"],
                   axes, path)


def _ort_text_forward(session, encoder):
    """A replacement for a CLIP text encoder's `forward` returning the same output class."""
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling
    from transformers.models.clip.modeling_clip import CLIPTextModelOutput

    projected = "WithProjection" in type(encoder).__name__

    def forward(input_ids, attention_mask=None, position_ids=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **_):
        first, last, penultimate = (torch.from_numpy(a) for a in
                                    session.run(None, {"input_ids": input_ids.detach().cpu().numpy().astype(np.int64)}))
        hidden = (penultimate, last)  # callers index [-2] (penultimate) and [-1]
        if projected:
            return CLIPTextModelOutput(text_embeds=first, last_hidden_state=last, hidden_states=hidden)
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=first, hidden_states=hidden)

    return forward


def _export(module, args, inputs, outputs, axes, path: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape asserts traced as constants: expected
        torch.onnx.export(module, args, str(tmp), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    tmp.replace(path)  # a crash mid-export never leaves a half-written graph under the final name
    return path


def _ort_unet_forward(session, unet):
    """A replacement for `unet.forward` that runs the graph (same call signature as diffusers')."""
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    input_names = {i.name for i in session.get_inputs()}

    def forward(sample, timestep, encoder_hidden_states, timestep_cond=None, attention_mask=None,
                cross_attention_kwargs=None, added_cond_kwargs=None, return_dict=True, **_):
        t = timestep if torch.is_tensor(timestep) else torch.tensor(timestep)
        feeds = {"sample": sample.detach().cpu().float().numpy(),
                 "timestep": np.asarray(t.detach().cpu().float().reshape(-1)[:1].numpy(), np.float32),
                 "encoder_hidden_states": encoder_hidden_states.detach().cpu().float().numpy()}
        if "text_embeds" in input_names:
            feeds["text_embeds"] = added_cond_kwargs["text_embeds"].detach().cpu().float().numpy()
            feeds["time_ids"] = added_cond_kwargs["time_ids"].detach().cpu().float().numpy()
        out = torch.from_numpy(session.run(None, feeds)[0]).to(sample.device, sample.dtype)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    return forward
