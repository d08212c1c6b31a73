"""S3Gen's token encoder: a conformer (relative-position self-attention, no conv module) that upsamples
25 Hz speech-token embeddings to 50 Hz mel-frame features."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FlowEncoderConfig:
    dim: int = 512
    heads: int = 8
    ffn_dim: int = 2048
    n_blocks: int = 6
    n_up_blocks: int = 4
    lookahead: int = 3
    up_stride: int = 2


def rel_positions(length: int, dim: int, device, dtype) -> torch.Tensor:
    """Sinusoidal encodings of relative distances length-1 ... -(length-1), (1, 2*length-1, dim)."""
    rel = torch.arange(length - 1, -length, -1, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * -(math.log(10000.0) / dim))
    pe = torch.zeros(2 * length - 1, dim, device=device)
    pe[:, 0::2] = torch.sin(rel * div)
    pe[:, 1::2] = torch.cos(rel * div)
    return pe[None].to(dtype)


class LinearEmbed(nn.Module):
    """Linear + LayerNorm input layer, scaled by sqrt(dim) for the relative-position encoding."""

    def __init__(self, dim: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim, eps=1e-5))
        self.scale = math.sqrt(dim)

    def forward(self, x):
        x = self.out(x) * self.scale
        return x, rel_positions(x.shape[1], x.shape[2], x.device, x.dtype)


class RelPosSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.h, self.d_k = heads, dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))

    def forward(self, x, pos_emb, key_mask, chunk: int = 512):
        """x (B, T, C); pos_emb (1, 2T-1, C); key_mask (B, 1, T) bool, True on real frames. Queries go in
        chunks of `chunk` rows so the relative-position scores never take T x (2T-1) memory at once."""
        B, T, C = x.shape
        q = self.linear_q(x).view(B, T, self.h, self.d_k)
        k = self.linear_k(x).view(B, T, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(B, T, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(1, -1, self.h, self.d_k).transpose(1, 2)  # (1, H, 2T-1, D)
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        masked = ~key_mask[:, None]  # (B, 1, 1, T)
        out = []
        for r0 in range(0, T, chunk):
            c = min(chunk, T - r0)
            content = torch.matmul(q_u[:, :, r0:r0 + c], k.transpose(-2, -1))  # (B, H, c, T)
            # Row i scores distance j - i, found at index (T-1) - i + j of the 2T-1 encodings; the rows of
            # this chunk need the window starting at (T-1) - (r0+c-1), of width T + c - 1.
            window = p[:, :, T - r0 - c: 2 * T - 1 - r0]
            pos = torch.matmul(q_v[:, :, r0:r0 + c], window.transpose(-2, -1)).contiguous()  # (B, H, c, T+c-1)
            W = pos.shape[-1]
            pos = pos.as_strided((B, self.h, c, T), (self.h * c * W, c * W, W - 1, 1), pos.storage_offset() + c - 1)
            scores = (content + pos) / math.sqrt(self.d_k)
            attn = scores.masked_fill(masked, float("-inf")).softmax(-1).masked_fill(masked, 0.0)
            out.append(torch.matmul(attn, v))
        out = torch.cat(out, dim=2) if len(out) > 1 else out[0]
        return self.linear_out(out.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    def __init__(self, cfg: FlowEncoderConfig):
        super().__init__()
        self.self_attn = RelPosSelfAttention(cfg.dim, cfg.heads)
        self.feed_forward = FeedForward(cfg.dim, cfg.ffn_dim)
        self.norm_ff = nn.LayerNorm(cfg.dim, eps=1e-12)
        self.norm_mha = nn.LayerNorm(cfg.dim, eps=1e-12)

    def forward(self, x, pos_emb, key_mask):
        x = x + self.self_attn(self.norm_mha(x), pos_emb, key_mask)
        return x + self.feed_forward(self.norm_ff(x))


class PreLookahead(nn.Module):
    """Each frame sees `lookahead` future frames (conv1), then two past ones (conv2); residual."""

    def __init__(self, dim: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(dim, dim, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3)

    def forward(self, x):
        h = F.pad(x.transpose(1, 2), (0, self.lookahead))
        h = F.pad(F.leaky_relu(self.conv1(h)), (2, 0))
        return x + self.conv2(h).transpose(1, 2)


class Upsample(nn.Module):
    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(dim, dim, stride * 2 + 1)

    def forward(self, x):  # (B, C, T) -> (B, C, stride*T)
        x = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return self.conv(F.pad(x, (self.stride * 2, 0)))


class UpsampleConformerEncoder(nn.Module):
    def __init__(self, cfg: FlowEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = LinearEmbed(cfg.dim)
        self.pre_lookahead_layer = PreLookahead(cfg.dim, cfg.lookahead)
        self.encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.n_blocks))
        self.up_layer = Upsample(cfg.dim, cfg.up_stride)
        self.up_embed = LinearEmbed(cfg.dim)
        self.up_encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.n_up_blocks))
        self.after_norm = nn.LayerNorm(cfg.dim, eps=1e-5)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        """x (B, T, C) token embeddings, lengths (B,) -> (B, 2T, C), mask (B, 1, 2T)."""
        mask = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
        x, pos = self.embed(x)
        # Padded frames of a batch are zeroed so the lookahead conv sees zeros past each row's end, as alone.
        x = self.pre_lookahead_layer(x * mask[..., None].to(x.dtype))
        for layer in self.encoders:
            x = layer(x, pos, mask[:, None])
        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)
        lengths = lengths * self.cfg.up_stride
        mask = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
        x, pos = self.up_embed(x)
        for layer in self.up_encoders:
            x = layer(x, pos, mask[:, None])
        return self.after_norm(x), mask[:, None]
