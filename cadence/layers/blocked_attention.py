"""Bidirectional attention for the CPU in blocks of heads: scores, softmax and the weighted sum of one block of
heads at a time, each block's score matrix small enough to stay in the cores' caches.

PyTorch's fused CPU kernel for `scaled_dot_product_attention` runs bf16 at its fp32 speed (its inner loops
convert to fp32); plain batched matmuls reach the CPU's bf16 dot products (AVX512-BF16, AMX) and cost about
half as long for the CFM estimator's shapes (docs/cpu.md, "Attention"). In fp32 the fused kernel is as fast or
faster, so the CPU plans use this only with bf16 matmuls (`matmul_dtype`), whatever the dtype around them."""

from __future__ import annotations

import torch

from .key_padding import KeyPadding

SCORE_BLOCK_BYTES = 5 * 2 ** 20
"""The score matrices of one block of heads: about what two cores' L2 caches and a slice of L3 hold."""

SOFTMAX_IN_PLACE = True
"""Whether the probabilities overwrite the scores (False: a fresh tensor, for A/B runs: `scripts/cpu_flow_ab.py`)."""


def heads_per_block(heads: int, length: int, itemsize: int, budget: int | None = None) -> int:
    """The largest power-of-two divisor of `heads` whose (n, T, T) scores fit `budget` bytes (default
    `SCORE_BLOCK_BYTES`); at least 1."""
    budget = SCORE_BLOCK_BYTES if budget is None else budget
    n = 1
    while heads % (2 * n) == 0 and 2 * n * length * length * itemsize <= budget:
        n *= 2
    return n


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding: KeyPadding | None,
                      matmul_dtype: torch.dtype | None = None) -> torch.Tensor:
    """`padded_attention`'s result, computed a block of heads at a time with q, k, v and the scores in
    `matmul_dtype` (default: q's dtype); q, k, v (B, H, T, D), usually head views of (B, T, H * D) projections
    -> (B, H, T, D) in q's dtype, a head view of a (B, T, H * D) tensor (what the output projection reads)."""
    B, H, T, D = q.shape
    out_dtype, dtype = q.dtype, matmul_dtype or q.dtype
    bias = None if padding is None else padding.bias.to(dtype)  # (B, 1, 1, T)
    n = heads_per_block(H, T, torch.finfo(dtype).bits // 8)

    def heads_contiguous(t):  # one pass that converts and lays each head's (T, D) out contiguously: the
        return torch.empty((B, H, T, D), dtype=dtype).copy_(t)  # matmuls over strided heads ran ~10% slower

    q, k, v = heads_contiguous(q).mul_(D ** -0.5), heads_contiguous(k), heads_contiguous(v)
    kt = k.transpose(-1, -2)  # (B, H, D, T)
    out = torch.empty((B, H, T, D), dtype=dtype)
    for b in range(B):
        # A row without padding (every lone request) skips the bias: adding zeros is a pass over the scores.
        padded = bias is not None and bool(bias[b].any())
        row_bias = bias[b, 0].expand(n, T, T) if padded else None  # (n, T, T) view, no copy
        for h in range(0, H, n):
            heads = slice(h, h + n)
            scores = (torch.bmm(q[b, heads], kt[b, heads]) if row_bias is None
                      else torch.baddbmm(row_bias, q[b, heads], kt[b, heads]))  # (n, T, T)
            # In place, the probabilities overwrite the scores still in cache instead of filling fresh memory: the
            # whole attention ~20% faster at 600 frames on two cores (docs/cpu.md).
            probs = torch.softmax(scores, dim=-1, out=scores) if SOFTMAX_IN_PLACE else torch.softmax(scores, dim=-1)
            torch.bmm(probs, v[b, heads], out=out[b, heads])
    tokens_major = torch.empty((B, T, H, D), dtype=out_dtype)  # converted and transposed in one pass
    return tokens_major.copy_(out.transpose(1, 2)).transpose(1, 2)
