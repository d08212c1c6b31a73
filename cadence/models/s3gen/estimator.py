"""The CFM vector-field estimator: a 1-D U-Net of causal conv ResNet blocks and transformer blocks,
conditioned on time, encoder features, speaker and prompt mel."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...layers.key_padding import key_padding, padded_attention


@dataclass(frozen=True)
class EstimatorConfig:
    in_channels: int = 320  # x, mu, speaker, prompt mel: 4 × 80
    out_channels: int = 80
    channels: int = 256
    n_blocks: int = 4  # transformer blocks per U-Net stage
    n_mid: int = 12
    heads: int = 8
    head_dim: int = 64
    meanflow: bool = False  # Turbo's distilled estimator: takes a start and an end time (t, r)


class CausalConv1d(nn.Conv1d):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(cin, cout, kernel)
        self.left = kernel - 1

    def forward(self, x):
        return super().forward(F.pad(x, (self.left, 0)))


class Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class CausalBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.block = nn.Sequential(CausalConv1d(cin, cout, 3), Transpose(), nn.LayerNorm(cout), Transpose(), nn.Mish())

    def forward(self, x, mask):
        return self.block(x * mask) * mask


class CausalResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, time_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, cout))
        self.block1 = CausalBlock(cin, cout)
        self.block2 = CausalBlock(cout, cout)
        self.res_conv = nn.Conv1d(cin, cout, 1)

    def forward(self, x, mask, t_emb):
        h = self.block1(x, mask) + self.mlp(t_emb)[:, :, None]
        return self.block2(h, mask) + self.res_conv(x * mask)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])
        self.attend = padded_attention  # (q, k, v, padding) -> out; a CPU plan swaps in its blocked form

    def forward(self, x, padding):
        """x (B, T, C); padding a `KeyPadding`: which positions of each row are real."""
        B, T, _ = x.shape

        def heads(t):  # (B, T, H*D) -> (B, H, T, D)
            return t.view(B, T, self.heads, -1).transpose(1, 2)

        out = self.attend(heads(self.to_q(x)), heads(self.to_k(x)), heads(self.to_v(x)), padding)
        return self.to_out[0](out.transpose(1, 2).reshape(B, T, -1))


class GELUProj(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x):
        return F.gelu(self.proj(x))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Module()
        self.ff.net = nn.ModuleList([GELUProj(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim)])

    def forward(self, x, padding):
        x = x + self.attn1(self.norm1(x), padding)
        h = self.norm3(x)
        for m in self.ff.net:
            h = m(h)
        return x + h


class TransformerStack(nn.ModuleList):
    """A U-Net stage's transformer blocks over a (B, C, T) feature map, computed in the dtype of the blocks' own
    parameters and handed back in the caller's (a plan may keep the blocks in another dtype than the
    convolutions around them: `memory.cpu_int8.place_transformer_stacks_`)."""

    def forward(self, x, padding):
        """x (B, C, T) -> (B, C, T) in x's dtype; padding a `KeyPadding` or None."""
        dtype = self[0].norm1.weight.dtype
        h = x.transpose(1, 2).to(dtype)  # (B, T, C)
        if padding is not None:
            padding = padding._replace(bias=padding.bias.to(dtype))
        for block in self:
            h = block(h, padding)
        return h.transpose(1, 2).to(x.dtype)


class TimestepMLP(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


def sinusoidal_time(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    emb = scale * t[:, None] * freqs[None]
    return torch.cat((emb.sin(), emb.cos()), dim=-1)


class ConditionalDecoder(nn.Module):
    def __init__(self, cfg: EstimatorConfig):
        super().__init__()
        self.cfg = cfg
        c, time_dim = cfg.channels, cfg.channels * 4
        self.time_mlp = TimestepMLP(cfg.in_channels, time_dim)
        # IntMeanFlow's time mixer (arXiv 2510.07979 §3.3): one embedding of (t, r) from the two time embeddings.
        self.time_embed_mixer = nn.Linear(2 * time_dim, time_dim, bias=False) if cfg.meanflow else None

        def stage(cin):
            return [CausalResnetBlock(cin, c, time_dim),
                    TransformerStack(TransformerBlock(c, cfg.heads, cfg.head_dim) for _ in range(cfg.n_blocks))]

        self.down_blocks = nn.ModuleList([nn.ModuleList(stage(cfg.in_channels) + [CausalConv1d(c, c, 3)])])
        self.mid_blocks = nn.ModuleList(nn.ModuleList(stage(c)) for _ in range(cfg.n_mid))
        self.up_blocks = nn.ModuleList([nn.ModuleList(stage(2 * c) + [CausalConv1d(c, c, 3)])])
        self.final_block = CausalBlock(c, c)
        self.final_proj = nn.Conv1d(c, cfg.out_channels, 1)

    def time_embedding(self, t: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
        """t (B,) -> (B, 4C); a meanflow estimator mixes in the end time r (B,) too."""
        t_emb = self.time_mlp(sinusoidal_time(t, self.cfg.in_channels).to(t.dtype))
        if self.time_embed_mixer is None:
            return t_emb
        r_emb = self.time_mlp(sinusoidal_time(r, self.cfg.in_channels).to(r.dtype))
        return self.time_embed_mixer(torch.cat((t_emb, r_emb), dim=1))

    def forward(self, x, mask, mu, t, spks, cond, r=None):
        """x, mu, cond (B, 80, T); mask (B, 1, T); t (B,); spks (B, 80); r (B,) the step's end time (meanflow
        only) -> velocity (B, 80, T)."""
        t_emb = self.time_embedding(t, r)
        x = torch.cat((x, mu, spks[:, :, None].expand(-1, -1, x.shape[-1]), cond), dim=1)
        padding = key_padding(mask, x.dtype)
        resnet, blocks, down = self.down_blocks[0]
        x = blocks(resnet(x, mask, t_emb), padding)
        skip = x
        x = down(x * mask)
        for resnet, blocks in self.mid_blocks:
            x = blocks(resnet(x, mask, t_emb), padding)
        resnet, blocks, up = self.up_blocks[0]
        x = torch.cat((x[:, :, :skip.shape[-1]], skip), dim=1)
        x = blocks(resnet(x, mask, t_emb), padding)
        x = up(x * mask)
        x = self.final_block(x, mask)
        return self.final_proj(x * mask) * mask
