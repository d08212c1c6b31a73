"""Bidirectional attention over rows padded at the end (the CFM estimator's batches): the padding in the two forms
attention kernels take, and the call that picks between them.

A padded batch's attention has two exact forms. An additive key bias (0 on a row's real positions, -1e10 on its
padding) suits any kernel, but on CUDA the kernels that take one are cuDNN's (a plan built per new shape, on the
calling thread: 0.6-1.0 s for each new batch shape on an H100) or the memory-efficient one (a third slower than
cuDNN's on an 8-row batch of the flow). Variable-length FlashAttention takes no bias: each row's queries see
only the keys of their own segment, which `KeyPadding` describes without moving any data (below), with kernels
compiled ahead of time and nothing spent on the padded keys."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .attention import attention, dispatcher_chooses

try:  # PyTorch >= 2.10
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # pragma: no cover - older PyTorch: the bias form everywhere
    varlen_attn = None

VARLEN_ATTENTION = True
"""Whether `padded_attention` uses variable-length FlashAttention on CUDA (False: the bias form, for A/B runs)."""


class KeyPadding(NamedTuple):
    """Which positions of each row of a (B, ..., T) batch are real: the first L_b of row b, the rest padding.

    - `bias` (B, 1, 1, T): additive, 0 on real keys and -1e10 on padding.
    - `cu_q`, `cu_k` (2B + 1,) int32: the segment bounds of variable-length attention over the batch laid out as
      B * T positions (row b at [bT, (b+1)T)). Segment 2b holds all T queries of row b and its real keys
      [bT, bT + L_b); segment 2b + 1 holds no query and row b's padded keys. Every query, padded ones
      included, so attends to its own row's real keys, exactly what the bias does."""

    bias: torch.Tensor
    cu_q: torch.Tensor
    cu_k: torch.Tensor


def key_padding(mask: torch.Tensor, dtype: torch.dtype) -> KeyPadding:
    """mask (B, 1, T), 1 on each row's real positions (a prefix of the row), 0 after -> `KeyPadding`, the bias in
    `dtype`. Built on the mask's device without reading it back (CUDA graphs can capture it)."""
    B, _, T = mask.shape
    # counted as integers: a sum in the mask's dtype rounds (in bf16 a row of 837 real positions summed to 836)
    lengths = mask[:, 0].sum(-1, dtype=torch.int32)  # (B,)
    starts = torch.arange(B, device=mask.device, dtype=torch.int32) * T  # (B,)
    end = torch.full((1,), B * T, device=mask.device, dtype=torch.int32)
    cu_q = torch.cat((torch.stack((starts, starts + T), dim=1).flatten(), end))  # (2B + 1,)
    cu_k = torch.cat((torch.stack((starts, starts + lengths), dim=1).flatten(), end))
    bias = ((1.0 - mask.to(dtype)) * -1.0e10)[:, None]  # (B, 1, 1, T)
    return KeyPadding(bias, cu_q, cu_k)


def varlen_applies(q: torch.Tensor) -> bool:
    """Whether `padded_attention` takes the variable-length kernel for q (B, H, T, D)."""
    return (VARLEN_ATTENTION and varlen_attn is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
            and q.shape[-1] <= 256 and q.shape[-1] % 8 == 0
            and not torch.compiler.is_compiling() and not dispatcher_chooses())


def padded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding: KeyPadding | None) -> torch.Tensor:
    """q, k, v (B, H, T, D), padding a `KeyPadding` or None (no row padded) -> (B, H, T, D).

    On CUDA in half precision: variable-length FlashAttention over `padding`'s segments. Inside
    `attention.dispatcher_choice` (the CFM graphs' captures, where cuDNN's plan is built once and its kernel is
    the fastest to replay), under torch.compile, and elsewhere: `attention` with the bias."""
    if padding is None or not varlen_applies(q):
        return attention(q, k, v, None if padding is None else padding.bias)
    B, H, T, D = q.shape

    def packed(t):  # (B, H, T, D) -> (B * T, H, D): a view when t is a head view of (B, T, H * D), else a copy
        return t.transpose(1, 2).reshape(B * T, H, D)

    out = varlen_attn(packed(q), packed(k), packed(v), padding.cu_q, padding.cu_k, T, T)
    return out.view(B, T, H, D).transpose(1, 2)
