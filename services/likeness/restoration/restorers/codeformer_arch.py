"""CodeFormer (Zhou et al., NeurIPS 2022, "Towards Robust Blind Face Restoration with Codebook
Lookup Transformer"), written from the paper and the published checkpoint layout so the official
`codeformer.pth` (`params_ema`) loads with `strict=True`.

Shape of the network at 512x512 (nf 64, channel multipliers 1, 2, 2, 4, 4, 8, two residual
blocks per level, self-attention at 16x16):
- encoder: 512 -> 16x16x256 latent; its features at 32..256 px are kept for the fusion;
- transformer: 9 pre-norm self-attention layers (512-d, 8 heads, MLP 1024) over the 256 latent
  positions with a learned position embedding, predicting one of 1024 codebook entries per position;
- the codebook's vectors are decoded by the VQGAN generator; after the first residual block at 32,
  64, 128 and 256 px a controllable feature transform (SFT) fuses encoder features, scaled by `w`:
  `dec + w * (dec * scale(enc, dec) + shift(enc, dec))`. `w = 0` is pure codebook output (strongest
  restoration), `w = 1` follows the input most but still decodes through the codebook;
- AdaIN (on in the official inference): before decoding, the looked-up codes take the per-channel
  mean and standard deviation of the encoder's latent.
Module and parameter names follow the checkpoint's keys (`encoder.blocks.N`, `quantize.embedding`,
`position_emb`, `feat_emb`, `ft_layers.N.self_attn`, `idx_pred_layer`, `fuse_convs_dict.<size>`,
`generator.blocks.N`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.norm2 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        if in_ch != out_ch:
            self.conv_out = nn.Conv2d(in_ch, out_ch, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.conv_out(x) if self.in_ch != self.out_ch else x)


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 projections."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)
        k = self.k(h).reshape(b, c, hh * ww).transpose(1, 2)
        v = self.v(h).reshape(b, c, hh * ww).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, nf: int, emb_dim: int, ch_mult: tuple[int, ...], res_blocks: int, resolution: int,
                 attn_resolutions: tuple[int, ...]):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1)]
        in_mult = (1, *ch_mult)
        res = resolution
        ch = nf
        for i, mult in enumerate(ch_mult):
            ch, out = nf * in_mult[i], nf * mult
            for _ in range(res_blocks):
                blocks.append(ResBlock(ch, out))
                ch = out
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch))
            if i != len(ch_mult) - 1:
                blocks.append(Downsample(ch))
                res //= 2
        blocks += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch), _norm(ch), nn.Conv2d(ch, emb_dim, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)


class Generator(nn.Module):
    def __init__(self, nf: int, emb_dim: int, ch_mult: tuple[int, ...], res_blocks: int, resolution: int,
                 attn_resolutions: tuple[int, ...]):
        super().__init__()
        ch = nf * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        blocks: list[nn.Module] = [nn.Conv2d(emb_dim, ch, 3, 1, 1), ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]
        for i in reversed(range(len(ch_mult))):
            out = nf * ch_mult[i]
            for _ in range(res_blocks):
                blocks.append(ResBlock(ch, out))
                ch = out
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch))
            if i != 0:
                blocks.append(Upsample(ch))
                res *= 2
        blocks += [_norm(ch), nn.Conv2d(ch, 3, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)


class Codebook(nn.Module):
    """The VQGAN codebook (nearest-neighbour quantiser); CodeFormer only looks entries up."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(size, dim)

    def lookup(self, indices: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        return self.embedding(indices.reshape(b, h, w)).permute(0, 3, 1, 2).contiguous()


class TransformerSALayer(nn.Module):
    """Pre-norm self-attention + GELU MLP; the position embedding is added to queries and keys."""

    def __init__(self, dim: int, heads: int, dim_mlp: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0)
        self.linear1 = nn.Linear(dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:  # x: (seq, batch, dim)
        h = self.norm1(x)
        qk = h + pos
        x = x + self.self_attn(qk, qk, value=h, need_weights=False)[0]
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


def adaptive_instance_norm(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`content` renormalised to the per-channel mean and standard deviation of `style` (unbiased
    variance + eps, as the official code computes them): the codebook's features take on the colour
    and illumination statistics of the degraded input's latent."""
    def stats(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = feat.flatten(2)
        return flat.mean(dim=2)[..., None, None], (flat.var(dim=2) + eps).sqrt()[..., None, None]

    content_mean, content_std = stats(content)
    style_mean, style_std = stats(style)
    return (content - content_mean) / content_std * style_std + style_mean


class FuseSFT(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.encode_enc = ResBlock(2 * ch, ch)
        self.scale = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(ch, ch, 3, 1, 1))
        self.shift = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(ch, ch, 3, 1, 1))

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float) -> torch.Tensor:
        e = self.encode_enc(torch.cat([enc, dec], dim=1))
        return dec + w * (dec * self.scale(e) + self.shift(e))


class CodeFormer(nn.Module):
    # Index of the encoder / generator block after which features of each size are taken / fused.
    ENCODER_TAP = {"512": 2, "256": 5, "128": 8, "64": 11, "32": 14, "16": 18}
    GENERATOR_FUSE = {"16": 6, "32": 9, "64": 12, "128": 15, "256": 18, "512": 21}
    FUSE_CHANNELS = {"16": 512, "32": 256, "64": 256, "128": 128, "256": 128, "512": 64}

    def __init__(self, dim_embd: int = 512, n_head: int = 8, n_layers: int = 9, codebook_size: int = 1024,
                 latent_size: int = 256, connect_list: tuple[str, ...] = ("32", "64", "128", "256"),
                 img_size: int = 512, nf: int = 64, ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8),
                 res_blocks: int = 2, attn_resolutions: tuple[int, ...] = (16,), emb_dim: int = 256):
        super().__init__()
        self.img_size, self.emb_dim, self.connect_list = img_size, emb_dim, connect_list
        self.encoder = Encoder(nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions)
        self.quantize = Codebook(codebook_size, emb_dim)
        self.generator = Generator(nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions)
        self.position_emb = nn.Parameter(torch.zeros(latent_size, dim_embd))
        self.feat_emb = nn.Linear(emb_dim, dim_embd)
        self.ft_layers = nn.Sequential(*[TransformerSALayer(dim_embd, n_head, 2 * dim_embd) for _ in range(n_layers)])
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False))
        self.fuse_convs_dict = nn.ModuleDict({s: FuseSFT(self.FUSE_CHANNELS[s]) for s in connect_list})

    def forward(self, x: torch.Tensor, w: float = 0.0, adain: bool = True) -> torch.Tensor:
        """x: (B, 3, 512, 512) in [-1, 1] -> restored (B, 3, 512, 512), roughly in [-1, 1].
        `adain` as the official inference runs it: the looked-up codes take the input latent's
        channel statistics before decoding."""
        taps = {self.ENCODER_TAP[s]: s for s in self.connect_list}
        enc_feats: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i in taps:
                enc_feats[taps[i]] = x
        b, _, h, wd = x.shape
        tokens = self.feat_emb(x.flatten(2).permute(2, 0, 1))  # (h*w, B, dim)
        pos = self.position_emb.unsqueeze(1).expand(-1, b, -1)
        for layer in self.ft_layers:
            tokens = layer(tokens, pos)
        logits = self.idx_pred_layer(tokens).permute(1, 0, 2)  # (B, h*w, codebook)
        lq_feat = x
        x = self.quantize.lookup(logits.argmax(dim=2), b, h, wd)
        if adain:
            x = adaptive_instance_norm(x, lq_feat)
        fuse_at = {self.GENERATOR_FUSE[s]: s for s in self.connect_list}
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            if i in fuse_at and w > 0:
                x = self.fuse_convs_dict[fuse_at[i]](enc_feats[fuse_at[i]], x, w)
        return x
