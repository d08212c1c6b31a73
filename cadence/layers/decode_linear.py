"""Fused linears for a one-row decode step: LayerNorm folded into the matmul's prologue, bias, GELU and the
residual add into its epilogue, so a GPT-2 block's decode step is four matmul kernels instead of eight
kernels (two norms, four matmuls, a GELU, two adds).

Why: a decode step of Turbo's T3 reads ~0.6 GB of weights in 24 layers of small kernels, and on an H200 it is
bound by how many kernels run one after another and how long each takes to reach full bandwidth (the int8
plan, half the bytes, was no faster). Each program here loads BLOCK_N whole weight rows and the input row in one
go, with no loop (all its loads in flight at once), normalises the row in registers and reduces.

`norm_linear` and `linear_residual` give the eager math (the same ops in the same order) wherever the kernel
does not apply: CPU, more than one row (cuBLAS's tiles serve batches), a linear that is not a plain bf16/fp16
`nn.Linear` with a bias (int8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernel_op import kernel_op

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of torch
    triton = None

TILE = 8192  # weight elements a program loads at once: BLOCK_N rows of K (8 rows of 1024, 2 of 4096)

if triton is not None:
    @triton.jit
    def _decode_linear_kernel(x_ptr, ln_w_ptr, ln_b_ptr, w_ptr, b_ptr, res_ptr, out_ptr, N, K, eps, stride_wn,
                              HAS_NORM: tl.constexpr, GELU: tl.constexpr, HAS_RES: tl.constexpr,
                              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """out[n] = act(norm(x) . w[n] + b[n]) (+ res[n]) for the BLOCK_N features n of this program."""
        pid = tl.program_id(0)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        k_live = rk < K
        n_live = rn < N
        w = tl.load(w_ptr + rn[:, None] * stride_wn + rk[None, :], mask=n_live[:, None] & k_live[None, :],
                    other=0.0)  # (BLOCK_N, BLOCK_K): issued first, the rest overlaps it
        x = tl.load(x_ptr + rk, mask=k_live, other=0.0).to(tl.float32)
        if HAS_NORM:  # LayerNorm in fp32 over the row held in registers
            mean = tl.sum(x, 0) / K
            dev = tl.where(k_live, x - mean, 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(dev * dev, 0) / K + eps)
            g = tl.load(ln_w_ptr + rk, mask=k_live, other=0.0).to(tl.float32)
            beta = tl.load(ln_b_ptr + rk, mask=k_live, other=0.0).to(tl.float32)
            x = dev * rstd * g + beta
        # the normalised row takes the weights' precision, as the eager LayerNorm's output does
        x = x.to(w_ptr.dtype.element_ty).to(tl.float32)
        acc = tl.sum(w.to(tl.float32) * x[None, :], 1)  # (BLOCK_N,)
        acc += tl.load(b_ptr + rn, mask=n_live, other=0.0).to(tl.float32)
        if GELU:  # GPT-2's tanh GELU: 0.5 (1 + tanh(z)) = sigmoid(2 z)
            z = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
            acc = acc * tl.sigmoid(2.0 * z)
        if HAS_RES:
            acc += tl.load(res_ptr + rn, mask=n_live, other=0.0).to(tl.float32)
        tl.store(out_ptr + rn, acc.to(out_ptr.dtype.element_ty), mask=n_live)


def launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, norm: tuple | None = None,
           gelu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The kernel itself: x (1, K), weight (N, K), bias (N,), norm (weight, bias, eps) of a LayerNorm over K,
    residual (1, N) -> (1, N) in the weight's dtype."""
    K = x.shape[-1]
    N = weight.shape[0]
    x = x.contiguous()
    out = torch.empty(1, N, device=x.device, dtype=weight.dtype)
    block_k = triton.next_power_of_2(K)
    block_n = max(1, TILE // block_k)
    ln_w, ln_b, eps = norm if norm is not None else (bias, bias, 0.0)
    res = residual.contiguous() if residual is not None else out
    _decode_linear_kernel[(triton.cdiv(N, block_n),)](
        x, ln_w, ln_b, weight, bias, res, out, N, K, eps, weight.stride(0), HAS_NORM=norm is not None,
        GELU=gelu, HAS_RES=residual is not None, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4)
    return out


if triton is not None:
    # Custom ops: torch.compile (the decoder layers under `compile`) sees one opaque call each.
    @kernel_op("norm_linear", mutates_args=())
    def _norm_linear_op(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float, weight: torch.Tensor,
                        bias: torch.Tensor, gelu: bool) -> torch.Tensor:
        return launch(x, weight, bias, (ln_w, ln_b, eps), gelu)

    @_norm_linear_op.register_fake
    def _(x, ln_w, ln_b, eps, weight, bias, gelu):
        return x.new_empty(x.shape[0], weight.shape[0], dtype=weight.dtype)

    @kernel_op("linear_residual", mutates_args=())
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
            and x.numel() == x.shape[-1] and x.shape[-1] <= TILE)


def norm_linear(x: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear, gelu: bool = False) -> torch.Tensor:
    """linear(norm(x)), then GPT-2's tanh GELU when `gelu`; x (..., K) -> (..., N)."""
    if applies(x, linear):
        flat = x.reshape(-1, x.shape[-1])
        out = _norm_linear_op(flat, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias, gelu)
        return out.view(*x.shape[:-1], -1)
    y = linear(norm(x))
    return F.gelu(y, approximate="tanh") if gelu else y


def linear_residual(x: torch.Tensor, linear: nn.Linear, residual: torch.Tensor) -> torch.Tensor:
    """residual + linear(x); x (..., K), residual (..., N)."""
    if applies(x, linear) and residual.dtype == linear.weight.dtype:
        flat = x.reshape(-1, x.shape[-1])
        out = _linear_residual_op(flat, linear.weight, linear.bias,
                                                residual.reshape(-1, residual.shape[-1]))
        return out.view(residual.shape)
    return residual + linear(x)
