"""A fused weight-only int8 matmul for decode (few rows): each program dequantises a tile of int8 weight
rows in registers and multiplies it by the (row-padded) activations on the tensor cores, so the weight
is read once, as one byte per element."""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of torch
    triton = None


if triton is not None:
    @triton.jit
    def _int8_mm_kernel(x_ptr, w_ptr, s_ptr, out_ptr, M, N, K, stride_xm, stride_wn, stride_om,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        DOT_BF16: tl.constexpr):
        pid = tl.program_id(0)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.arange(0, BLOCK_M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :],
                        mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
            w = tl.load(w_ptr + rn[None, :] * stride_wn + rk[:, None],
                        mask=(rn[None, :] < N) & (rk[:, None] < K), other=0)
            w = w.to(tl.float32)  # int8 -> fp32 -> bf16: exact for |w| <= 127
            if DOT_BF16:
                acc += tl.dot(x.to(tl.bfloat16), w.to(tl.bfloat16))
            else:  # fp32 dot: Triton's CPU interpreter (tests) cannot multiply bf16
                acc += tl.dot(x.to(tl.float32), w)
        s = tl.load(s_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
        acc = acc * s[None, :]
        tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))


def available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


def int8_mm(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor, block_n: int = 32, block_k: int = 256,
            bf16_dot: bool = True) -> torch.Tensor:
    """x (..., K) bf16 with at most 16 rows; w (N, K) int8; scales (N,) -> (..., N) in x's dtype."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).contiguous()
    M, K = x2.shape
    N = w.shape[0]
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(N, block_n),)
    _int8_mm_kernel[grid](x2, w, scales, out, M, N, K, x2.stride(0), w.stride(0), out.stride(0),
                          BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=block_k, DOT_BF16=bf16_dot)
    return out.reshape(*shape[:-1], N)
