"""`process_logits` (`layers.sampling`) after the CFG combine as one Triton kernel, one program per row: the
repetition penalty, temperature, min-p, top-k, top-p, the penalty again where the family applies it last, and
the final softmax, over the row's whole vocabulary held in registers.

Why: as eager tensor math these are ~25 kernels a decode step, the two filters through a radix sort of the
vocabulary (about a tenth of Turbo's single-request step on an H200). No sort is needed to filter: top-k keeps
the values at or above the k-th largest and top-p the values whose ascending cumulative probability exceeds
1 - top_p, and both cut-offs are found by bisection over the values' order-preserving integer keys (32 masked
counts or sums over the row each). The math is the eager function's, in its order: top-k keeps every value tied
with the k-th, and top-p splits a tie at its edge (frequent in bf16 logits) as the eager function's stable sort
orders it, by id. The top-p sum adds in a tree instead of a running sum, so only a value whose cumulative
probability lies within rounding of 1 - top_p can fall on the other side."""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of torch
    triton = None

if triton is not None:
    @triton.jit
    def _order_key(x):
        """float32 -> int32 whose signed order is the floats' order (-inf lowest)."""
        bits = x.to(tl.int32, bitcast=True)
        return tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)

    @triton.jit
    def _penalize(x, seen, penalty):
        return tl.where(seen, tl.where(x < 0, x * penalty, x / penalty), x)

    @triton.jit
    def _softmax(x):
        e = tl.exp(x - tl.max(x, 0))
        return e / tl.sum(e, 0)

    @triton.jit
    def _filter_kernel(logits_ptr, s_logits, counts_ptr, s_counts, probs_ptr, s_probs, rep_ptr, temp_ptr,
                       min_p_ptr, top_p_ptr, top_k_ptr, V, PENALTY_LAST: tl.constexpr, BLOCK: tl.constexpr):
        """Program b: row b's logits (V,) -> its sampling probabilities (V,)."""
        b = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        valid = offs < V
        x = tl.load(logits_ptr + b * s_logits + offs, mask=valid, other=float("-inf")).to(tl.float32)
        seen = tl.load(counts_ptr + b * s_counts + offs, mask=valid, other=0) > 0
        penalty = tl.load(rep_ptr + b).to(tl.float32)
        if not PENALTY_LAST:
            x = _penalize(x, seen, penalty)
        x = x / tl.load(temp_ptr + b).to(tl.float32)
        min_p = tl.load(min_p_ptr + b).to(tl.float32)
        if min_p > 0:  # min-p: below min_p times the top token's probability
            p = _softmax(x)
            x = tl.where(p < min_p * tl.max(p, 0), float("-inf"), x)
        key = _order_key(x)
        k = tl.load(top_k_ptr + b).to(tl.int32)
        if (k > 0) & (k < V):
            # top-k: the largest t with at least k keys >= t, searched in [min key, max key]
            lo = tl.min(tl.where(valid, key, 2147483647), 0).to(tl.int64)
            hi = tl.max(key, 0).to(tl.int64)
            for _ in range(33):
                mid = lo + (hi - lo + 1) // 2
                enough = tl.sum(((key >= mid) & valid).to(tl.int32), 0) >= k
                lo = tl.where(enough, mid, lo)
                hi = tl.where(enough, hi, mid - 1)
            x = tl.where(key >= lo, x, float("-inf"))
            key = _order_key(x)
        top_p = tl.load(top_p_ptr + b).to(tl.float32)
        if top_p < 1:
            # top-p: drop the low tail whose ascending cumulative probability is at most 1 - top_p. The kept values
            # are those at or above the smallest t whose mass of keys <= t exceeds it (the top value always stays).
            p = _softmax(x)
            cut = 1.0 - top_p
            top = tl.max(key, 0).to(tl.int64)
            lo = tl.min(tl.where(valid, key, 2147483647), 0).to(tl.int64)
            hi = top
            for _ in range(33):
                mid = lo + (hi - lo) // 2
                above = tl.sum(tl.where(key <= mid, p, 0.0), 0) > cut
                hi = tl.where(above, mid, hi)
                lo = tl.where(above, lo, mid + 1)
            # Ties at the edge value (common in bf16 logits) in the order of a stable ascending sort, by id: the
            # first r of them still have a cumulative probability <= cut and go; the top value keeps one at least.
            tied = (key == hi) & valid
            below = tl.sum(tl.where(key < hi, p, 0.0), 0)
            q = tl.max(tl.where(tied, p, 0.0), 0)
            n_tied = tl.sum(tied.to(tl.int32), 0)
            rank = tl.cumsum(tied.to(tl.int32), 0)  # 1-based among the tied ids
            most = (n_tied - (hi == top).to(tl.int32)).to(tl.float32)
            r = tl.minimum(tl.floor((cut - below) / q), most).to(tl.int32)
            x = tl.where((key > hi) | (tied & (rank > r)), x, float("-inf"))
        if PENALTY_LAST:
            x = _penalize(x, seen, penalty)
        tl.store(probs_ptr + b * s_probs + offs, _softmax(x), mask=valid)


def applies(device: torch.device | str) -> bool:
    """Whether the kernel runs for tensors on `device` (CUDA with Triton)."""
    return triton is not None and torch.device(device).type == "cuda"


def filtered_probs(logits: torch.Tensor, counts: torch.Tensor, repetition_penalty: torch.Tensor,
                   temperature: torch.Tensor, min_p: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
                   penalty_last: bool = False) -> torch.Tensor:
    """logits (B, V) after CFG, counts (B, V), knobs (B,) -> probs (B, V) fp32, as `process_logits` gives them
    (min_p = 0, top_k = 0 and top_p = 1 turn a filter off). Allocates its output: capturable in a CUDA graph."""
    B, V = logits.shape
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    counts = counts if counts.stride(-1) == 1 else counts.contiguous()
    probs = torch.empty(B, V, device=logits.device, dtype=torch.float32)
    block = triton.next_power_of_2(V)
    _filter_kernel[(B,)](logits, logits.stride(0), counts, counts.stride(0), probs, probs.stride(0),
                         repetition_penalty, temperature, min_p, top_p, top_k, V,
                         PENALTY_LAST=penalty_last, BLOCK=block, num_warps=16 if block > 8192 else 8)
    return probs
