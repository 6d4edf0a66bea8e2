"""Weight-only int8 quantisation of a diffusers UNet with torchao.

Every `nn.Linear` of the UNet (attention projections, feed-forwards, time and text-time embeddings:
~90% of SDXL's UNet weights) keeps its weights as int8 with one scale per output channel; activations
stay in the UNet's dtype. Weights take about half the memory of bf16/fp16. Speed depends on the
hardware's int8 kernels (measured in bench/generation.py --sdxl-shaped --int8). LoRA adapters add
their own unquantised layers on top, so adapters still load after quantisation.
"""

from __future__ import annotations


def quantize_unet_int8(unet) -> None:
    """Quantises `unet`'s linear weights to int8 in place (weight-only)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(unet, Int8WeightOnlyConfig())


def tensor_bytes(tensor) -> int:
    """Bytes a tensor holds, including quantised tensor subclasses (their int8 data and scales)."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def unet_weight_bytes(unet) -> int:
    return sum(tensor_bytes(t) for t in list(unet.parameters()) + list(unet.buffers()))
