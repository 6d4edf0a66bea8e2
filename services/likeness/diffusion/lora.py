"""LoRA adapter files: save and read in diffusers (PEFT) or kohya key format, load into pipelines.

Formats (both .safetensors):
  diffusers  `unet.<module>.lora_A.weight` / `.lora_B.weight` (as `save_lora_weights` writes;
             `text_encoder.` / `text_encoder_2.` prefixes for text-encoder layers); alpha/rank is
             folded into `lora_B`, so the file needs no alpha
  kohya      what kohya-ss sd-scripts writes and AUTOMATIC1111, ComfyUI and Forge read:
             `<lora_name>.lora_down.weight` / `.lora_up.weight` / `.alpha`, with `.alpha` the training
             alpha (equal to the `ss_network_alpha` metadata) and the up weights unscaled. Names:
               SD 1.5  `lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q`
                       `lora_te_text_model_encoder_layers_0_self_attn_q_proj` (one text encoder)
               SDXL    `lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q` (sd-scripts' SDXL
                       UNet uses the original SGM block layout: input/middle/output_blocks),
                       `lora_te1_text_model_encoder_layers_...`, `lora_te2_text_model_encoder_layers_...`
             plus `ss_*` and `modelspec.*` metadata as sd-scripts writes them.

Both formats load into diffusers to the same adapter (bit-identical output when alpha/rank is a power
of two, else equal up to float rounding). `read_lora` validates a file before it reaches a pipeline:
a corrupt or foreign file is an InvalidArgument naming the field, never a crash inside diffusers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from likeness.core.errors import InvalidArgument
from likeness.core.pngmeta import addnet_hash

FORMATS = ("diffusers", "kohya")
FAMILIES = ("sdxl", "sd15")
_PREFIXES = {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}
# sd-scripts names a single text encoder (SD 1.x) `lora_te`, two (SDXL) `lora_te1` / `lora_te2`
_SD15_PREFIXES = {**_PREFIXES, "text_encoder": "lora_te"}
# What sd-scripts' metadata says per family (ss_base_model_version, modelspec architecture/implementation)
_FAMILY_META = {
    "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora", "https://github.com/Stability-AI/generative-models",
             1024),
    "sd15": ("sd_v1", "stable-diffusion-v1/lora", "diffusers", 512),
}


@dataclass
class LoraFile:
    """A validated LoRA state dict (tensors on CPU) and what was found in the file."""

    state_dict: dict
    format: str  # "diffusers" or "kohya"
    rank: int
    nbytes: int  # bytes of tensor data (what the adapter costs in memory, in its dtype)
    metadata: dict = field(default_factory=dict)
    components: tuple[str, ...] = ()  # unet / text_encoder / text_encoder_2
    addnet_hash: str = ""  # sha256 of the tensor payload, as A1111 hashes LoRA files (core.pngmeta)


def peft_state_dict(model, adapter_name: str = "default") -> dict:
    """The LoRA layers of a PEFT-wrapped model (`unet.add_adapter(LoraConfig(...))`), keyed by module."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter_name)


def save_lora(path: str | Path, unet_layers: dict, *, fmt: str = "diffusers", alpha: float | None = None,
              text_encoder_layers: dict | None = None, text_encoder_2_layers: dict | None = None,
              metadata: dict | None = None, family: str = "sdxl", unet_config: dict | None = None,
              title: str = "", resolution: int = 0) -> Path:
    """Writes LoRA layers (PEFT keys `<module>.lora_A.weight`/`lora_B.weight`) as one .safetensors.

    `alpha` is the LoRA alpha used in training (None = rank, scaling 1); `family` (sdxl / sd15) and
    the UNet's config (`layers_per_block`) decide the kohya names; `metadata` (str values) lands in
    the safetensors header beside the `ss_*` / `modelspec.*` keys, for example the training run id.
    """
    import torch
    from safetensors.torch import save_file

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    out: dict[str, torch.Tensor] = {}
    ranks: set[int] = set()
    parts = {"unet": unet_layers, "text_encoder": text_encoder_layers, "text_encoder_2": text_encoder_2_layers}
    for component, layers in parts.items():
        for key, tensor in (layers or {}).items():
            module, kind = _split_peft_key(key)
            value = tensor.detach().to("cpu").contiguous()
            rank = value.shape[0] if kind == "A" else value.shape[1]
            ranks.add(rank)
            if fmt == "diffusers":
                if kind == "B" and alpha is not None:
                    value = value * (alpha / rank)  # fold the scaling: the file is self-contained
                out[f"{component}.{module}.lora_{kind}.weight"] = value
            else:
                base = kohya_name(component, module, family, unet_config)
                out[f"{base}.lora_{'down' if kind == 'A' else 'up'}.weight"] = value
                if kind == "A":  # loaders scale by alpha / rank, as in training
                    out[f"{base}.alpha"] = torch.tensor(float(alpha if alpha is not None else rank))
    if not out:
        raise ValueError("no LoRA layers to save")
    rank = max(ranks)
    # a diffusers file carries its scaling folded in: to a reader its alpha is its rank
    file_alpha = alpha if (fmt == "kohya" and alpha is not None) else rank
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(community_metadata(family, rank, file_alpha, title or Path(path).stem, resolution,
                                   text_encoder=bool(text_encoder_layers or text_encoder_2_layers)))
    meta["likeness_lora_format"] = fmt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=meta)
    return path


def community_metadata(family: str, rank: int, alpha: float, title: str, resolution: int = 0, *,
                       text_encoder: bool = False) -> dict[str, str]:
    """The `ss_*` keys kohya-ss sd-scripts writes and the `modelspec.*` keys of Stability AI's model
    spec (1.0.0) that sd-scripts also writes: what A1111, ComfyUI and Civitai show for a LoRA."""
    version, architecture, implementation, native = _FAMILY_META[family]
    size = resolution or native
    alpha_text = str(int(alpha)) if float(alpha).is_integer() else str(alpha)
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": alpha_text,
        "ss_base_model_version": version,
        "ss_v2": "False",
        "ss_resolution": f"({size}, {size})",
        "ss_network_train_unet_only": str(not text_encoder),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture,
        "modelspec.implementation": implementation,
        "modelspec.title": title,
        "modelspec.resolution": f"{size}x{size}",
        "modelspec.prediction_type": "epsilon",
        "modelspec.date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
    }


def kohya_name(component: str, module: str, family: str, unet_config: dict | None = None) -> str:
    """The LoRA module name sd-scripts gives `module` (a diffusers/transformers module path)."""
    if component != "unet":
        # transformers 5 flattened CLIPTextModel (`encoder.layers...`); sd-scripts names follow the
        # transformers 4 layout `text_model.encoder.layers...`
        if not module.startswith(("text_model.", "text_projection")):
            module = "text_model." + module
        prefixes = _SD15_PREFIXES if family == "sd15" else _PREFIXES
        return f"{prefixes[component]}_{module.replace('.', '_')}"
    if family == "sdxl":
        module = sgm_unet_module(module, (unet_config or {}).get("layers_per_block", 2))
    return f"lora_unet_{module.replace('.', '_')}"


def sgm_unet_module(module: str, layers_per_block) -> str:
    """A diffusers UNet module path in the SGM (original SDXL) layout sd-scripts' SDXL UNet uses:
    down_blocks.i.attentions.j -> input_blocks.(1 + i*(n+1) + j).1, mid_block.attentions.0 ->
    middle_block.1, up_blocks.i.attentions.j -> output_blocks.(i*(n+1) + j).1 (n layers per block;
    up blocks hold n+1); the transformer inside keeps its names."""
    n = layers_per_block if isinstance(layers_per_block, int) else layers_per_block[0]
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", module):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + i * (n + 1) + j}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", module):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{i * (n + 1) + j}.1.{rest}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", module):
        return f"middle_block.1.{m[1]}"
    raise ValueError(f"no SGM name for UNet module {module} (LoRA on attention blocks only)")


def read_lora(source: str | Path | bytes, field: str = "adapter") -> LoraFile:
    """Reads and validates a LoRA .safetensors (a path or the file's bytes); raises
    InvalidArgument(field, ...) when it is unusable."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        state = load(data)
        metadata = _read_metadata(data)
    except (SafetensorError, OSError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(field, f"not a readable .safetensors LoRA file ({exc})") from None
    if not state:
        raise InvalidArgument(field, "LoRA file holds no tensors")
    fmt = detect_format(state.keys())
    if fmt is None:
        sample = ", ".join(sorted(state)[:3])
        raise InvalidArgument(field, f"unrecognised LoRA key format (expected diffusers `unet.*.lora_A.weight` "
                                     f"or kohya `lora_unet_*.lora_down.weight`; found e.g. {sample})")
    ranks = set()
    for key, tensor in state.items():
        if key.endswith(".alpha"):
            continue
        if tensor.ndim not in (2, 4):
            raise InvalidArgument(field, f"tensor {key} has {tensor.ndim} dimensions, expected 2 or 4")
        if not torch.isfinite(tensor).all():
            raise InvalidArgument(field, f"tensor {key} holds NaN or infinite values")
        if ".lora_A." in key or ".lora_down." in key:
            ranks.add(tensor.shape[0])
    _check_pairs(state, fmt, field)
    components = tuple(sorted({_component_of(k, fmt) for k in state}))
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    return LoraFile(state, fmt, max(ranks) if ranks else 0, nbytes, metadata, components, addnet_hash(data))


def detect_format(keys) -> str | None:
    keys = list(keys)
    if any(k.startswith(("lora_unet_", "lora_te1_", "lora_te2_", "lora_te_")) for k in keys):
        return "kohya"
    if any(".lora_A." in k or ".lora.down." in k or ".lora_linear_layer." in k for k in keys):
        return "diffusers"
    return None


def load_into_pipeline(pipe, lora: LoraFile, adapter_name: str, field: str = "adapter") -> None:
    """Adds `lora` to `pipe` as adapter `adapter_name` (PEFT layers; the base weights stay untouched).

    A file for another architecture (modules or shapes that do not match) is an InvalidArgument.
    """
    try:
        pipe.load_lora_weights(dict(lora.state_dict), adapter_name=adapter_name)
    except (ValueError, RuntimeError, KeyError, IndexError) as exc:
        _remove_partial(pipe, adapter_name)
        raise InvalidArgument(field, f"LoRA does not fit this model ({str(exc)[:300]})") from None
    loaded = {n for names in pipe.get_list_adapters().values() for n in names}
    if adapter_name not in loaded:
        raise InvalidArgument(field, "LoRA matched no module of this model")


def _remove_partial(pipe, adapter_name: str) -> None:
    try:
        pipe.delete_adapters(adapter_name)
    except Exception:  # noqa: BLE001 - nothing was loaded, nothing to remove
        pass


def _split_peft_key(key: str) -> tuple[str, str]:
    for kind in ("A", "B"):
        marker = f".lora_{kind}."
        if marker in key:
            return key.split(marker)[0], kind
    raise ValueError(f"not a PEFT LoRA key: {key}")


def _component_of(key: str, fmt: str) -> str:
    if fmt == "kohya":
        return {"lora_unet": "unet", "lora_te1": "text_encoder", "lora_te2": "text_encoder_2",
                "lora_te": "text_encoder"}.get(key.split("_", 2)[0] + "_" + key.split("_", 2)[1], "unet")
    return key.split(".", 1)[0] if key.split(".", 1)[0] in _PREFIXES else "unet"


def _check_pairs(state: dict, fmt: str, field: str) -> None:
    down, up = (".lora_down.weight", ".lora_up.weight") if fmt == "kohya" else (".lora_A.weight", ".lora_B.weight")
    for key, a in state.items():
        if not key.endswith(down):
            continue
        b = state.get(key[: -len(down)] + up)
        if b is None:
            raise InvalidArgument(field, f"tensor {key} has no matching {up.strip('.')} tensor")
        if b.shape[1] != a.shape[0]:
            raise InvalidArgument(field, f"rank mismatch in {key}: down {tuple(a.shape)} vs up {tuple(b.shape)}")


def _read_metadata(data: bytes) -> dict:
    # safetensors header: 8-byte little-endian length, then JSON with an optional __metadata__
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    return dict(header.get("__metadata__") or {})
