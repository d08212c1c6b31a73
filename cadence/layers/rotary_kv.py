"""A Llama decode step's rotary embedding and KV-cache write in one kernel: from the fused q/k/v projection's
output, each (row, head) program rotates its query and key in fp32, stores the query for the attention, and writes
the key and value into the cache at the row's position.

Why: eagerly this is four kernels in every layer of every step (q/k to fp32, the complex multiply, back to the
weights' precision, the KV write), about a tenth of a single request's captured step on an H200, each moving a few
kilobytes. The math is `t3.apply_rotary`'s (adjacent (even, odd) rotation pairs, fp32, one rounding at the end)."""

from __future__ import annotations

import torch

from .kernel_op import kernel_op

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of torch
    triton = None

if triton is not None:
    @triton.jit
    def _rotary_kv_kernel(qkv_ptr, freq_ptr, q_ptr, kc_ptr, vc_ptr, pos_ptr, n_heads, s_row, s_freq,
                          s_cb, s_ch, s_cn, s_db, s_dh, s_dn,
                          PER_ROW: tl.constexpr, HALF: tl.constexpr, D: tl.constexpr):
        """Program (row * heads + head). qkv row: [q heads | k heads | v heads], each head's D = 2 * HALF values
        stored as (even, odd) pairs; freq row: HALF (cos, sin) pairs; q out (B, H, 1, D) contiguous."""
        pid = tl.program_id(0)
        b, h = pid // n_heads, pid % n_heads
        pos = tl.load(pos_ptr + (b if PER_ROW else 0))
        i = tl.arange(0, HALF)
        cos = tl.load(freq_ptr + b * s_freq + 2 * i)
        sin = tl.load(freq_ptr + b * s_freq + 2 * i + 1)
        C = n_heads * D
        head = qkv_ptr + b * s_row + h * D
        qe, qo = tl.load(head + 2 * i).to(tl.float32), tl.load(head + 2 * i + 1).to(tl.float32)
        ke, ko = tl.load(head + C + 2 * i).to(tl.float32), tl.load(head + C + 2 * i + 1).to(tl.float32)
        dt = q_ptr.dtype.element_ty
        q_out = q_ptr + (b * n_heads + h) * D
        tl.store(q_out + 2 * i, (qe * cos - qo * sin).to(dt))
        tl.store(q_out + 2 * i + 1, (qe * sin + qo * cos).to(dt))
        k_out = kc_ptr + b * s_cb + h * s_ch + pos * s_cn
        tl.store(k_out + 2 * i, (ke * cos - ko * sin).to(dt))
        tl.store(k_out + 2 * i + 1, (ke * sin + ko * cos).to(dt))
        d = tl.arange(0, D)
        tl.store(vc_ptr + b * s_db + h * s_dh + pos * s_dn + d, tl.load(head + 2 * C + d))

    @kernel_op("rotary_kv_write", mutates_args=("k_cache", "v_cache"))
    def _rotary_kv_op(qkv: torch.Tensor, freqs: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      positions: torch.Tensor) -> torch.Tensor:
        return launch(qkv, freqs, k_cache, v_cache, positions)

    @_rotary_kv_op.register_fake
    def _(qkv, freqs, k_cache, v_cache, positions):
        B, H, _, D = k_cache.shape
        return qkv.new_empty(B, H, 1, D)


def launch(qkv: torch.Tensor, freqs: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
           positions: torch.Tensor) -> torch.Tensor:
    """The kernel itself: qkv (B, 3C) (or (B, 1, 3C)), rows contiguous; freqs (1 or B, D/2, 2) fp32 (cos, sin);
    caches (B, H, S, D) with D contiguous; positions (1,) or (B, 1) -> rotated queries (B, H, 1, D)."""
    B, H, _, D = k_cache.shape
    rows = qkv.reshape(B, -1)
    q = torch.empty(B, H, 1, D, device=qkv.device, dtype=qkv.dtype)
    _rotary_kv_kernel[(B * H,)](rows, freqs, q, k_cache, v_cache, positions, H, rows.stride(0),
                                freqs.stride(0) if freqs.shape[0] > 1 else 0,
                                k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
                                v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
                                PER_ROW=positions.dim() == 2, HALF=D // 2, D=D, num_warps=1)
    return q


def applies(qkv: torch.Tensor, k_cache: torch.Tensor, positions: torch.Tensor) -> bool:
    """One new position per row (a decode step) on CUDA, half precision, a power-of-two head size, rows contiguous."""
    D = k_cache.shape[-1]
    return (triton is not None and qkv.is_cuda and qkv.dim() == 3 and qkv.shape[1] == 1
            and qkv.dtype in (torch.bfloat16, torch.float16) and qkv.stride(-1) == 1 and D & (D - 1) == 0
            and k_cache.stride(-1) == 1 and k_cache.dtype == qkv.dtype
            and (positions.dim() == 1 and positions.numel() == 1 or positions.dim() == 2))


def rotate_and_write(qkv: torch.Tensor, freqs: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     positions: torch.Tensor) -> torch.Tensor:
    """qkv (B, 1, 3C), freqs complex (1, D/2) or (B, 1, 1, D/2) as `t3.rotary_freqs` gives them -> rotated
    queries (B, H, 1, D); the rotated keys and the values are written into the caches at `positions`."""
    pairs = torch.view_as_real(freqs).reshape(-1, freqs.shape[-1], 2)  # (1 or B, D/2, 2): a view, no copy
    return _rotary_kv_op(qkv, pairs, k_cache, v_cache, positions)
