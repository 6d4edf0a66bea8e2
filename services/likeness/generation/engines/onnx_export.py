"""Export of a pipeline's networks to ONNX graphs: UNet, VAE decoder and CLIP text encoders.

Graphs are exported from float32 modules on the CPU, whatever the pipeline's own dtype and device:
tracing a float16 module with float32 dummy inputs fails (`mat1 and mat2 must have the same
dtype`), a CUDA module would need CUDA inputs, and ONNX Runtime's CPU provider lacks float16
kernels for many operators. TensorRT still builds float16 engines from the float32 graph
(`trt_fp16_enable`). `float32_cpu_copy` reloads the model folder for that, so a GPU pod never
holds a second copy of the weights on the GPU.

A graph whose weights exceed `EXTERNAL_DATA_THRESHOLD` (protobuf's 2 GB limit; the real SDXL
UNet is ~10 GB in float32) is saved in the ONNX external-data format: `<name>.onnx` plus one
`<name>.onnx.data` beside it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

OPSET = 17
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26  # bytes of weights; a 64 MB margin for the graph itself


def float32_cpu_copy(pipe, folder, kind: str):
    """`pipe` itself when it is float32 on the CPU; else the model folder loaded again that way."""
    import torch

    from likeness.diffusion.pipelines import load_pipeline
    from likeness.generation.engines.torch_engine import main_task

    if pipe.unet.dtype == torch.float32 and pipe.unet.device.type == "cpu":
        return pipe
    return load_pipeline(folder, kind, main_task(kind), dtype=torch.float32, device="cpu")


@functools.cache
def exporter_version() -> str:
    """What exported graphs depend on besides the weights: this module's code, the opset, and the
    torch, diffusers and transformers versions (the exporter and the traced networks' code). The
    engine cache folder names it, so an upgraded image exports again instead of reusing graphs an
    older exporter wrote (e.g. before a fix to the exported inputs)."""
    import diffusers
    import torch
    import transformers

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"opset {OPSET} torch {torch.__version__} diffusers {diffusers.__version__} "
             f"transformers {transformers.__version__}".encode())
    return h.hexdigest()[:12]


@contextmanager
def folder_lock(folder: Path):
    """Holds an exclusive lock on `folder` that other processes respect: pods sharing the engine
    cache on a ReadWriteMany volume, or two processes on one machine. One exports; the others wait,
    then find its graphs. (flock: on NFS, Linux maps it to a POSIX lock the server arbitrates.)"""
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- export ------------------------------------------------------------------------------------

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


def unet_text_dims(pipe) -> tuple[int, int]:
    """(pooled text embedding width, number of time ids) of an SDXL pipeline's UNet: 6 ids for the
    base (sizes and crop), 5 for the refiner (aesthetic score instead of the target size). The
    UNet alone cannot tell (its projection width is the sum), so the pooled width is the second
    text encoder's projection, as in diffusers' `_get_add_time_ids`."""
    unet = pipe.unet
    text_dim = pipe.text_encoder_2.config.projection_dim
    time_dims = unet.config.projection_class_embeddings_input_dim - text_dim
    return text_dim, time_dims // unet.config.addition_time_embed_dim


def export_unet(pipe, path: Path) -> Path:
    import torch

    unet = pipe.unet
    wrapper, sdxl = _unet_wrapper(unet)
    side = max(8, unet.config.sample_size)
    sample = torch.randn(2, unet.config.in_channels, side, side)
    timestep = torch.tensor([999.0])
    hidden = torch.randn(2, 77, unet.config.cross_attention_dim)
    args, names = [sample, timestep, hidden], ["sample", "timestep", "encoder_hidden_states"]
    axes = {"sample": {0: "batch", 2: "height", 3: "width"}, "encoder_hidden_states": {0: "batch"},
            "noise_pred": {0: "batch", 2: "height", 3: "width"}}
    if sdxl:
        text_dim, n_ids = unet_text_dims(pipe)
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


def ort_text_forward(session, encoder):
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


def weight_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _export(module, args, inputs, outputs, axes, path: Path) -> Path:
    """Exports into a scratch folder, then moves the files into place, the graph last: a crash
    mid-export never leaves a half-written graph under the final name."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.parent / f".{path.name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    tmp = scratch / path.name
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape asserts traced as constants: expected
        torch.onnx.export(module, args, str(tmp), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    data_name = f"{path.name}.data"
    if weight_bytes(module) > EXTERNAL_DATA_THRESHOLD or len(os.listdir(scratch)) > 1:
        _to_single_external_file(tmp, data_name)
        (scratch / data_name).replace(path.parent / data_name)
    else:
        (path.parent / data_name).unlink(missing_ok=True)
    tmp.replace(path)
    shutil.rmtree(scratch, ignore_errors=True)
    return path


def _to_single_external_file(graph: Path, data_name: str) -> None:
    """Rewrites `graph` with every weight in one external file `data_name` beside it (torch's
    exporter writes one file per tensor when the graph is over 2 GB; either way we keep one)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=True)
    for leftover in graph.parent.iterdir():
        if leftover != graph:
            leftover.unlink()
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)


def ort_unet_forward(session, unet):
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
