"""One-query attention over each row's own prefix of a KV cache, for batched decoding.

A batched decode step attends every row over the same span of cache positions (the longest row's, rounded up
to a captured bucket) with the shorter rows' tail masked. cuDNN's kernel reads that whole span at ~2.9 TB/s on
an H100, so a batch of requests at different lengths pays for the longest one's keys on every row (measured:
b = 32, span 1024, mean length 676: 8.05 GB read where 5.32 GB are real). This Triton kernel stops each row at
its own length: one program per (row, head) walks that row's keys, contiguous in the (rows, heads, positions,
dim) cache, with an online softmax in fp32. Where Triton or CUDA is missing, or a batch is too small to fill
the GPU with one program per (row, head), the same result comes from SDPA with an additive mask."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of torch
    triton = None

MIN_PROGRAMS = 512  # below this many (row, head) pairs the GPU is under-filled: cuDNN's kernel wins


class PrefixMask(NamedTuple):
    """Row b of a decode step attends to cache positions [0, lengths[b]) of the first `span` (lengths (B,) int32)."""
    lengths: torch.Tensor
    span: int


if triton is not None:
    @triton.jit
    def _prefix_attention_kernel(q_ptr, k_ptr, v_ptr, out_ptr, len_ptr, n_heads, scale,
                                 s_qb, s_qh, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh,
                                 HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
        pid = tl.program_id(0)
        b, h = pid // n_heads, pid % n_heads
        n_keys = tl.load(len_ptr + b)
        d = tl.arange(0, HEAD_DIM)
        q = tl.load(q_ptr + b * s_qb + h * s_qh + d).to(tl.float32) * scale
        k_row = k_ptr + b * s_kb + h * s_kh
        v_row = v_ptr + b * s_vb + h * s_vh
        m = tl.max(tl.full((BLOCK_N,), float("-inf"), tl.float32), 0)  # running max, as a scalar tensor
        denom = tl.sum(tl.zeros((BLOCK_N,), tl.float32), 0)
        acc = tl.zeros((HEAD_DIM,), tl.float32)
        for start in range(0, n_keys, BLOCK_N):
            n = start + tl.arange(0, BLOCK_N)
            live = n < n_keys
            k = tl.load(k_row + n[:, None] * s_kn + d[None, :], mask=live[:, None], other=0.0).to(tl.float32)
            s = tl.where(live, tl.sum(k * q[None, :], 1), float("-inf"))  # (BLOCK_N,)
            m_new = tl.maximum(m, tl.max(s, 0))
            p = tl.exp(s - m_new)
            rescale = tl.exp(m - m_new)
            v = tl.load(v_row + n[:, None] * s_vn + d[None, :], mask=live[:, None], other=0.0).to(tl.float32)
            acc = acc * rescale + tl.sum(p[:, None] * v, 0)
            denom = denom * rescale + tl.sum(p, 0)
            m = m_new
        tl.store(out_ptr + b * s_ob + h * s_oh + d, (acc / denom).to(out_ptr.dtype.element_ty))


def kernel_applies(shape: tuple, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `prefix_attention` runs the Triton kernel for queries of `shape` (B, H, 1, D) (else SDPA)."""
    B, H, T, D = shape
    return (triton is not None and device.type == "cuda" and T == 1 and B * H >= MIN_PROGRAMS
            and D in (32, 64, 128) and dtype in (torch.float16, torch.bfloat16, torch.float32))


def prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """q (B, H, 1, D); k, v (B, H, S, D) caches (any strides, D contiguous); lengths (B,) int32: row b attends to
    positions [0, lengths[b]), 1 <= lengths[b] <= S -> (B, H, 1, D)."""
    if not kernel_applies(q.shape, q.device, q.dtype):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=prefix_bias(lengths, k.shape[2], q.dtype))
    return torch.ops.cadence.prefix_attention(q, k, v, lengths)


if triton is not None:
    # A custom op: torch.compile (the decoder layers under `compile`) sees one opaque call, shapes from the fake.
    @torch.library.custom_op("cadence::prefix_attention", mutates_args=())
    def _prefix_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, H, _, D = q.shape
        out = torch.empty(B, H, D, device=q.device, dtype=q.dtype)
        q3 = q[:, :, 0]
        _prefix_attention_kernel[(B * H,)](q3, k, v, out, lengths, H, D ** -0.5,
                                           q3.stride(0), q3.stride(1), k.stride(0), k.stride(1), k.stride(2),
                                           v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1),
                                           HEAD_DIM=D, BLOCK_N=64, num_warps=4)
        return out[:, :, None]

    @_prefix_attention_op.register_fake
    def _(q, k, v, lengths):
        return q.new_empty(q.shape)


def prefix_bias(lengths: torch.Tensor, span: int, dtype: torch.dtype) -> torch.Tensor:
    """lengths (B,) -> additive mask (B, 1, 1, span): 0 before each row's length, -inf from it on."""
    live = torch.arange(span, device=lengths.device)[None] < lengths[:, None]
    return torch.zeros(live.shape, device=lengths.device, dtype=dtype).masked_fill_(~live, float("-inf"))[:, None, None]
