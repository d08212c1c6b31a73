"""A decode step's new keys and values into the KV cache in one kernel (eager: two index copies, or two indexed
writes per row position, each a kernel of its own in every layer of every step)."""

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
    def _kv_write_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, pos_ptr, n_heads,
                         s_kb, s_kh, s_vb, s_vh, s_cb, s_ch, s_cn, s_db, s_dh, s_dn,
                         PER_ROW: tl.constexpr, HEAD_DIM: tl.constexpr):
        """Program (row * heads + head): that head's one new key and value, to the row's position."""
        pid = tl.program_id(0)
        b, h = pid // n_heads, pid % n_heads
        pos = tl.load(pos_ptr + (b if PER_ROW else 0))
        d = tl.arange(0, HEAD_DIM)
        tl.store(kc_ptr + b * s_cb + h * s_ch + pos * s_cn + d, tl.load(k_ptr + b * s_kb + h * s_kh + d))
        tl.store(vc_ptr + b * s_db + h * s_dh + pos * s_dn + d, tl.load(v_ptr + b * s_vb + h * s_vh + d))

    @kernel_op("kv_write", mutates_args=("k_cache", "v_cache"))
    def _kv_write_op(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     positions: torch.Tensor) -> None:
        launch(k, v, k_cache, v_cache, positions)


def launch(k, v, k_cache, v_cache, positions) -> None:
    """k, v (B, H, 1, D), any strides with D contiguous; caches (B, H, S, D); positions (1,) or (B, 1)."""
    B, H, _, D = k.shape
    _kv_write_kernel[(B * H,)](k, v, k_cache, v_cache, positions, H, k.stride(0), k.stride(1), v.stride(0),
                               v.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
                               v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
                               PER_ROW=positions.dim() == 2, HEAD_DIM=D, num_warps=1)


def applies(k: torch.Tensor, positions: torch.Tensor) -> bool:
    """One new position per row (a decode step) on CUDA, with a power-of-two head size."""
    D = k.shape[-1]
    return (triton is not None and k.is_cuda and k.shape[2] == 1 and k.stride(-1) == 1 and D & (D - 1) == 0
            and (positions.dim() == 1 and positions.numel() == 1 or positions.dim() == 2))


def write_kv(k, v, k_cache, v_cache, positions) -> None:
    """Write this step's keys/values (B, H, T, D) into the caches (B, H, S, D) at `positions`: (T,) shared by
    all rows, or (B, 1) one position per row."""
    if applies(k, positions):
        _kv_write_op(k, v, k_cache, v_cache, positions)
    elif positions.dim() == 1:
        k_cache.index_copy_(2, positions, k)
        v_cache.index_copy_(2, positions, v)
    else:  # row b's single new key goes to its own position (B, H, D) <- (B, H, 1, D)
        rows = torch.arange(k.shape[0], device=k.device)
        k_cache[rows, :, positions[:, 0]] = k[:, :, 0]
        v_cache[rows, :, positions[:, 0]] = v[:, :, 0]
