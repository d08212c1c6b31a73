"""Fused linears for decode steps (a few rows): LayerNorm folded into the matmul's prologue, bias, GELU and the
residual add into its epilogue, so a GPT-2 block's decode step is four matmul kernels instead of eight
kernels (two norms, four matmuls, a GELU, two adds).

Why: a decode step of Turbo's T3 reads ~0.6 GB of weights in 24 layers of small kernels, and on an H200 it is
bound by how many kernels run one after another, not by bandwidth (the int8 plan, half the bytes, was no
faster). Each program here computes BLOCK_N output features for every row: it normalises the rows itself
(they are a few KB, read from L2 by every program), then streams its weight rows once.

`norm_linear` and `linear_residual` give the eager math (the same ops in the same order) wherever the kernel
does not apply: CPU, more than MAX_ROWS rows, a linear that is not a plain bf16/fp16 `nn.Linear` (int8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of torch
    triton = None

MAX_ROWS = 16  # more rows than this: cuBLAS's tiles win, the eager math runs
BLOCK_N = 16  # output features per program
BLOCK_K = 256  # input features per step of a program's loop

if triton is not None:
    @triton.jit
    def _decode_linear_kernel(x_ptr, ln_w_ptr, ln_b_ptr, w_ptr, b_ptr, res_ptr, out_ptr, M, N, K, eps,
                              stride_xm, stride_wn, stride_rm, stride_om,
                              HAS_NORM: tl.constexpr, GELU: tl.constexpr, HAS_RES: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                              USE_DOT: tl.constexpr):
        """out[m, n] = act(norm(x)[m] . w[n] + b[n]) (+ res[m, n]) for the BLOCK_N features n of this program."""
        pid = tl.program_id(0)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.arange(0, BLOCK_M)
        row_live = rm < M
        if HAS_NORM:  # LayerNorm statistics in fp32, two passes over the (small) rows
            total = tl.zeros((BLOCK_M,), tl.float32)
            for k0 in range(0, K, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :],
                            mask=row_live[:, None] & (rk[None, :] < K), other=0.0).to(tl.float32)
                total += tl.sum(x, 1)
            mean = total / K
            sq = tl.zeros((BLOCK_M,), tl.float32)
            for k0 in range(0, K, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                live = row_live[:, None] & (rk[None, :] < K)
                x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=live, other=0.0).to(tl.float32)
                dev = tl.where(live, x - mean[:, None], 0.0)
                sq += tl.sum(dev * dev, 1)
            rstd = 1.0 / tl.sqrt(sq / K + eps)
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            k_live = rk < K
            x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :],
                        mask=row_live[:, None] & k_live[None, :], other=0.0).to(tl.float32)
            if HAS_NORM:
                g = tl.load(ln_w_ptr + rk, mask=k_live, other=0.0).to(tl.float32)
                beta = tl.load(ln_b_ptr + rk, mask=k_live, other=0.0).to(tl.float32)
                x = (x - mean[:, None]) * rstd[:, None] * g[None, :] + beta[None, :]
            # the normalised rows take the weights' precision, as the eager LayerNorm's output does
            x = x.to(w_ptr.dtype.element_ty)
            w = tl.load(w_ptr + rn[None, :] * stride_wn + rk[:, None], mask=(rn[None, :] < N) & k_live[:, None],
                        other=0.0)  # (BLOCK_K, BLOCK_N)
            if USE_DOT:
                acc += tl.dot(x, w)
            else:  # one row (or the CPU interpreter): a reduction, no padded tensor-core tile
                acc += tl.sum(x.to(tl.float32)[:, :, None] * w.to(tl.float32)[None, :, :], 1)
        acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        if GELU:  # GPT-2's tanh GELU: 0.5 (1 + tanh(z)) = sigmoid(2 z)
            z = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
            acc = acc * tl.sigmoid(2.0 * z)
        out_mask = row_live[:, None] & (rn[None, :] < N)
        if HAS_RES:
            acc += tl.load(res_ptr + rm[:, None] * stride_rm + rn[None, :], mask=out_mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, norm: tuple | None = None,
           gelu: bool = False, residual: torch.Tensor | None = None, use_dot: bool | None = None) -> torch.Tensor:
    """The kernel itself: x (M, K) with M <= MAX_ROWS, weight (N, K), bias (N,), norm (weight, bias, eps) of a
    LayerNorm over K, residual (M, N) -> (M, N) in the weight's dtype."""
    M, K = x.shape
    N = weight.shape[0]
    x = x.contiguous()
    out = torch.empty(M, N, device=x.device, dtype=weight.dtype)
    block_m = 1 if M == 1 else 16
    dot = (block_m == 16 and x.is_cuda) if use_dot is None else use_dot
    ln_w, ln_b, eps = norm if norm is not None else (bias, bias, 0.0)
    res = residual.contiguous() if residual is not None else out
    _decode_linear_kernel[(triton.cdiv(N, BLOCK_N),)](
        x, ln_w, ln_b, weight, bias, res, out, M, N, K, eps, x.stride(0), weight.stride(0), res.stride(0),
        out.stride(0), HAS_NORM=norm is not None, GELU=gelu, HAS_RES=residual is not None,
        BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, USE_DOT=dot, num_warps=4)
    return out


if triton is not None:
    # Custom ops: torch.compile (the decoder layers under `compile`) sees one opaque call each.
    @torch.library.custom_op("cadence::norm_linear", mutates_args=())
    def _norm_linear_op(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float, weight: torch.Tensor,
                        bias: torch.Tensor, gelu: bool) -> torch.Tensor:
        return launch(x, weight, bias, (ln_w, ln_b, eps), gelu)

    @_norm_linear_op.register_fake
    def _(x, ln_w, ln_b, eps, weight, bias, gelu):
        return x.new_empty(x.shape[0], weight.shape[0], dtype=weight.dtype)

    @torch.library.custom_op("cadence::linear_residual", mutates_args=())
    def _linear_residual_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                            residual: torch.Tensor) -> torch.Tensor:
        return launch(x, weight, bias, residual=residual)

    @_linear_residual_op.register_fake
    def _(x, weight, bias, residual):
        return residual.new_empty(x.shape[0], weight.shape[0], dtype=weight.dtype)


def applies(x: torch.Tensor, linear: nn.Module) -> bool:
    """Whether the fused kernel runs for input x (..., K) through `linear` (a plain Linear with a bias: its
    subclasses that only mark a checkpoint layout count, an int8 one does not)."""
    return (triton is not None and x.is_cuda and isinstance(linear, nn.Linear)
            and type(linear).forward is nn.Linear.forward and linear.bias is not None
            and linear.weight.dtype in (torch.bfloat16, torch.float16) and x.dtype == linear.weight.dtype
            and x.numel() // x.shape[-1] <= MAX_ROWS)


def norm_linear(x: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear, gelu: bool = False) -> torch.Tensor:
    """linear(norm(x)), then GPT-2's tanh GELU when `gelu`; x (..., K) -> (..., N)."""
    if applies(x, linear):
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.cadence.norm_linear(flat, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias, gelu)
        return out.view(*x.shape[:-1], -1)
    y = linear(norm(x))
    return F.gelu(y, approximate="tanh") if gelu else y


def linear_residual(x: torch.Tensor, linear: nn.Linear, residual: torch.Tensor) -> torch.Tensor:
    """residual + linear(x); x (..., K), residual (..., N)."""
    if applies(x, linear) and residual.dtype == linear.weight.dtype:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.cadence.linear_residual(flat, linear.weight, linear.bias,
                                                residual.reshape(-1, residual.shape[-1]))
        return out.view(residual.shape)
    return residual + linear(x)
