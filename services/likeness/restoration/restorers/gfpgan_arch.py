"""GFPGAN v1.3/v1.4 "clean" architecture (Wang et al., CVPR 2021, "Towards Real-World Blind Face
Restoration with Generative Facial Prior"), written from the paper and the published checkpoint
layout so the official `GFPGANv1.4.pth` (`params_ema`) loads with `strict=True`. "Clean" = the
StyleGAN2 variant without custom CUDA ops (bilinear resampling instead of FIR filters).

At 512x512 (v1.4: channel multiplier 2, 512-d styles, SFT on half the channels, one w per layer):
- U-Net encoder: 1x1 conv, seven residual blocks that halve the size (512 -> 4), a 3x3 conv, a
  linear layer to 16 style vectors (w+), and a decoder of seven residual blocks back to 512 whose
  features (plus the encoder's skips) give a spatial scale and shift per resolution (SFT);
- the StyleGAN2 generator (constant 4x4 input, modulated/demodulated 3x3 convs with noise,
  bilinear upsampling, skip-connected ToRGB) driven by those styles; after the first conv at each
  resolution from 8 px up, half of its channels are modulated: `x2 * scale + shift`.
Module names follow the checkpoint's keys (`conv_body_first`, `conv_body_down.N`, `final_conv`,
`conv_body_up.N`, `toRGB.N`, `final_linear`, `condition_scale.N`, `condition_shift.N`,
`stylegan_decoder.{style_mlp,constant_input,style_conv1,to_rgb1,style_convs,to_rgbs,noises}`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class NormStyleCode(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """A conv whose weights are scaled per input channel by the style (and renormalised per output
    channel when `demodulate`); a grouped conv runs the batch's per-sample weights at once."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel = in_ch, out_ch, kernel
        self.demodulate, self.upsample = demodulate, upsample
        self.modulation = nn.Linear(style_dim, in_ch, bias=True)
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel, kernel) / math.sqrt(in_ch * kernel * kernel))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        weight = self.weight * self.modulation(style).view(b, 1, self.in_ch, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + 1e-8).view(b, self.out_ch, 1, 1, 1)
        if self.upsample:
            x = _resize(x, 2.0)
        h, w = x.shape[2:]
        out = F.conv2d(x.reshape(1, b * self.in_ch, h, w),
                       weight.reshape(b * self.out_ch, self.in_ch, self.kernel, self.kernel),
                       padding=self.kernel // 2, groups=b)
        return out.view(b, self.out_ch, *out.shape[2:])


class StyleConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, True, upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        out = self.modulated_conv(x, style) * math.sqrt(2.0)
        if noise is None:
            noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
        return F.leaky_relu(out + self.weight * noise + self.bias, 0.2)


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            out = out + (_resize(skip, 2.0) if self.upsample else skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


def _channels(multiplier: int, narrow: float) -> dict[int, int]:
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * multiplier, 128: 128 * multiplier,
            256: 64 * multiplier, 512: 32 * multiplier, 1024: 16 * multiplier}
    return {k: int(v * narrow) for k, v in base.items()}


class StyleGAN2DecoderSFT(nn.Module):
    """StyleGAN2 generator whose first conv per resolution (8 px up) takes an SFT condition."""

    def __init__(self, out_size: int, style_dim: int, num_mlp: int, multiplier: int, narrow: float,
                 sft_half: bool):
        super().__init__()
        ch = _channels(multiplier, narrow)
        self.sft_half = sft_half
        self.log_size = int(math.log2(out_size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2, True)]
        self.style_mlp = nn.Sequential(*mlp)  # in the checkpoint; unused for w+ input (v1.3/v1.4)
        self.constant_input = ConstantInput(ch[4], 4)
        self.style_conv1 = StyleConv(ch[4], ch[4], style_dim)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, res, res))
        self.style_convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        in_ch = ch[4]
        for i in range(3, self.log_size + 1):
            out_ch = ch[2 ** i]
            self.style_convs.append(StyleConv(in_ch, out_ch, style_dim, upsample=True))
            self.style_convs.append(StyleConv(out_ch, out_ch, style_dim))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            in_ch = out_ch

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor], fixed_noise: bool) -> torch.Tensor:
        """latent: (B, 2 * log_size - 2, style_dim) w+ codes; conditions: scale, shift per level."""
        noise = ([getattr(self.noises, f"noise{i}") for i in range(self.num_layers)] if fixed_noise
                 else [None] * self.num_layers)
        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for level, to_rgb in enumerate(self.to_rgbs):
            out = self.style_convs[2 * level](out, latent[:, i], noise[2 * level + 1])
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.sft_half:
                    same, modulated = out.chunk(2, dim=1)
                    out = torch.cat([same, modulated * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[2 * level + 2])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip


class ResizeResBlock(nn.Module):
    """conv, resample, conv, plus a resampled 1x1 skip (down: x0.5, up: x2)."""

    def __init__(self, in_ch: int, out_ch: int, factor: float):
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.leaky_relu(self.conv2(_resize(out, self.factor)), 0.2)
        return out + self.skip(_resize(x, self.factor))


class GFPGANv1Clean(nn.Module):
    def __init__(self, out_size: int = 512, style_dim: int = 512, multiplier: int = 2, num_mlp: int = 8,
                 narrow: float = 1.0, sft_half: bool = True):
        super().__init__()
        ch = _channels(multiplier, narrow * 0.5)  # the U-Net runs at half the decoder's width
        self.log_size = int(math.log2(out_size))
        self.style_dim = style_dim
        self.conv_body_first = nn.Conv2d(3, ch[out_size], 1)
        self.conv_body_down = nn.ModuleList(
            ResizeResBlock(ch[2 ** i], ch[2 ** (i - 1)], 0.5) for i in range(self.log_size, 2, -1))
        self.final_conv = nn.Conv2d(ch[4], ch[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(
            ResizeResBlock(ch[2 ** (i - 1)], ch[2 ** i], 2.0) for i in range(3, self.log_size + 1))
        self.toRGB = nn.ModuleList(nn.Conv2d(ch[2 ** i], 3, 1) for i in range(3, self.log_size + 1))
        self.final_linear = nn.Linear(ch[4] * 16, (2 * self.log_size - 2) * style_dim)  # one w per layer
        self.stylegan_decoder = StyleGAN2DecoderSFT(out_size, style_dim, num_mlp, multiplier, narrow, sft_half)

        def sft(c: int) -> nn.Sequential:
            out = c if sft_half else 2 * c
            return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(c, out, 3, 1, 1))

        self.condition_scale = nn.ModuleList(sft(ch[2 ** i]) for i in range(3, self.log_size + 1))
        self.condition_shift = nn.ModuleList(sft(ch[2 ** i]) for i in range(3, self.log_size + 1))

    def forward(self, x: torch.Tensor, fixed_noise: bool = True) -> torch.Tensor:
        """x: (B, 3, 512, 512) in [-1, 1] -> restored (B, 3, 512, 512), roughly in [-1, 1].
        `fixed_noise` uses the checkpoint's noise buffers, so the output is deterministic."""
        feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        latent = self.final_linear(feat.flatten(1)).view(x.shape[0], -1, self.style_dim)
        conditions = []
        for i, block in enumerate(self.conv_body_up):
            feat = block(feat + skips[i])
            conditions += [self.condition_scale[i](feat), self.condition_shift[i](feat)]
        return self.stylegan_decoder(latent, conditions, fixed_noise)
