"""LoRA adapter files: save and read in diffusers (PEFT) or kohya key format, load into pipelines.

Formats (both .safetensors):
  diffusers  `unet.<module>.lora_A.weight` / `.lora_B.weight` (as `save_lora_weights` writes;
             `text_encoder.` / `text_encoder_2.` prefixes for text-encoder layers)
  kohya      `lora_unet_<module_with_underscores>.lora_down.weight` / `.lora_up.weight` / `.alpha`
             (`lora_te1_` / `lora_te2_`), what AUTOMATIC1111, ComfyUI and kohya-ss read

`save_lora` folds the LoRA scaling alpha/rank into `lora_B` (and writes alpha = rank for kohya),
so a file means the same thing to every loader, whatever alpha it was trained with.
`read_lora` validates a file before it reaches a pipeline: a corrupt or foreign file is an
InvalidArgument naming the field, never a crash inside diffusers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from likeness.core.errors import InvalidArgument

FORMATS = ("diffusers", "kohya")
_PREFIXES = {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}


@dataclass
class LoraFile:
    """A validated LoRA state dict (tensors on CPU) and what was found in the file."""

    state_dict: dict
    format: str  # "diffusers" or "kohya"
    rank: int
    nbytes: int  # bytes of tensor data (what the adapter costs in memory, in its dtype)
    metadata: dict = field(default_factory=dict)
    components: tuple[str, ...] = ()  # unet / text_encoder / text_encoder_2


def peft_state_dict(model, adapter_name: str = "default") -> dict:
    """The LoRA layers of a PEFT-wrapped model (`unet.add_adapter(LoraConfig(...))`), keyed by module."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter_name)


def save_lora(path: str | Path, unet_layers: dict, *, fmt: str = "diffusers", alpha: float | None = None,
              text_encoder_layers: dict | None = None, text_encoder_2_layers: dict | None = None,
              metadata: dict | None = None) -> Path:
    """Writes LoRA layers (PEFT keys `<module>.lora_A.weight`/`lora_B.weight`) as one .safetensors.

    `alpha` is the LoRA alpha used in training (None = rank, scaling 1); `metadata` (str values)
    lands in the safetensors header, for example the training run id.
    """
    import torch
    from safetensors.torch import save_file

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    out: dict[str, torch.Tensor] = {}
    parts = {"unet": unet_layers, "text_encoder": text_encoder_layers, "text_encoder_2": text_encoder_2_layers}
    for component, layers in parts.items():
        for key, tensor in (layers or {}).items():
            module, kind = _split_peft_key(key)
            value = tensor.detach().to("cpu").contiguous()
            rank = value.shape[0] if kind == "A" else value.shape[1]
            if kind == "B" and alpha is not None:
                value = value * (alpha / rank)  # fold the scaling: the file is self-contained
            if fmt == "diffusers":
                out[f"{component}.{module}.lora_{kind}.weight"] = value
            else:
                base = f"{_PREFIXES[component]}_{module.replace('.', '_')}"
                out[f"{base}.lora_{'down' if kind == 'A' else 'up'}.weight"] = value
                if kind == "A":
                    out[f"{base}.alpha"] = torch.tensor(float(rank))
    if not out:
        raise ValueError("no LoRA layers to save")
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["likeness_lora_format"] = fmt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=meta)
    return path


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
    return LoraFile(state, fmt, max(ranks) if ranks else 0, nbytes, metadata, components)


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
