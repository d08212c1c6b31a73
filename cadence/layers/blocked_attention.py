"""Bidirectional attention for the CPU in blocks of heads: scores, softmax and the weighted sum of one block of
heads at a time, each block's score matrix small enough to stay in the cores' caches.

PyTorch's fused CPU kernel for `scaled_dot_product_attention` runs bf16 at its fp32 speed (its inner loops
convert to fp32); plain batched matmuls reach the CPU's bf16 dot products (AVX512-BF16, AMX) and cost about
half as long for the CFM estimator's shapes (docs/cpu.md, "Attention"). In fp32 the fused kernel is as fast or
faster, so the CPU plans use this only for a bf16 flow."""

from __future__ import annotations

import torch

from .key_padding import KeyPadding, padded_attention

SCORE_BLOCK_BYTES = 5 * 2 ** 20
"""The score matrices of one block of heads: about what two cores' L2 caches and a slice of L3 hold."""


def heads_per_block(heads: int, length: int, itemsize: int, budget: int | None = None) -> int:
    """The largest power-of-two divisor of `heads` whose (n, T, T) scores fit `budget` bytes (default
    `SCORE_BLOCK_BYTES`); at least 1."""
    budget = SCORE_BLOCK_BYTES if budget is None else budget
    n = 1
    while heads % (2 * n) == 0 and 2 * n * length * length * itemsize <= budget:
        n *= 2
    return n


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding: KeyPadding | None) -> torch.Tensor:
    """`padded_attention`'s result, computed a block of heads at a time; q, k, v (B, H, T, D)."""
    B, H, T, D = q.shape
    bias = None if padding is None else padding.bias  # (B, 1, 1, T)
    n = heads_per_block(H, T, q.element_size())
    out = torch.empty_like(q)
    q = q * D ** -0.5
    kt = k.transpose(-1, -2)  # (B, H, D, T)
    for b in range(B):
        # A row without padding (every lone request) skips the bias: adding zeros is a pass over the scores.
        padded = bias is not None and bool(bias[b].any())
        row_bias = bias[b, 0].expand(n, T, T) if padded else None  # (n, T, T) view, no copy
        for h in range(0, H, n):
            heads = slice(h, h + n)
            scores = (torch.bmm(q[b, heads], kt[b, heads]) if row_bias is None
                      else torch.baddbmm(row_bias, q[b, heads], kt[b, heads]))  # (n, T, T)
            torch.bmm(torch.softmax(scores, dim=-1), v[b, heads], out=out[b, heads])
    return out
