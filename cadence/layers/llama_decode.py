"""Fused linears for the Llama T3's decode step at one or two rows (a single request: one row, or its CFG pair):
RMSNorm folded into the matmul's prologue, SiLU-gating or the residual add into its epilogue, so a layer's four
matmuls are four kernels where the eager step runs ten (two norms, four matmuls, SiLU, a product, two adds).

Why: one captured step of the original model ran 588 kernels in 1.98 ms on an H200, its GEMVs at about 30% of HBM
bandwidth and its elementwise kernels another 40% of the time (docs/benchmarks.md, "Where the T3 time goes"). As in
`decode_linear` (Turbo's GPT-2 blocks), each program loads BLOCK_N whole weight rows and the input rows in one go
with no loop, normalises the rows in registers and reduces; both rows of a CFG pair share one read of the weights.

The helpers give the eager math (the same ops in the same order) wherever the kernel does not apply: CPU, more than
two rows (cuBLAS's tiles serve batches), a linear that is not a plain bf16/fp16 `nn.Linear` (int8), fp32."""

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

TILE = 8192  # weight elements a program loads at once per operand: BLOCK_N rows of K
MAX_ROWS = 2

if triton is not None:
    @triton.jit
    def _llama_linear_kernel(x_ptr, norm_w_ptr, w_ptr, res_ptr, out_ptr, N, K, eps, gate_offset,
                             M: tl.constexpr, HAS_NORM: tl.constexpr, GATED: tl.constexpr, HAS_RES: tl.constexpr,
                             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """For each of the M rows: out[m, n] = rms(x[m]) . w[n] (GATED: silu(. w[n]) * (. w[n + gate_offset]))
        (+ res[m, n]) for the BLOCK_N features n of this program; x, res, out contiguous (M, K) / (M, N)."""
        pid = tl.program_id(0)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        k_live = rk < K
        n_live = rn < N
        live = n_live[:, None] & k_live[None, :]
        w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=live, other=0.0).to(tl.float32)
        if GATED:
            u = tl.load(w_ptr + (rn[:, None] + gate_offset) * K + rk[None, :], mask=live, other=0.0).to(tl.float32)
        if HAS_NORM:
            g = tl.load(norm_w_ptr + rk, mask=k_live, other=0.0).to(tl.float32)
        for m in tl.static_range(M):
            x = tl.load(x_ptr + m * K + rk, mask=k_live, other=0.0).to(tl.float32)
            if HAS_NORM:  # RMSNorm in fp32; its output takes the weights' precision, as the eager norm's does
                rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / K + eps)
                x = (x * rstd * g).to(out_ptr.dtype.element_ty).to(tl.float32)
            acc = tl.sum(w * x[None, :], 1).to(out_ptr.dtype.element_ty).to(tl.float32)  # (BLOCK_N,)
            if GATED:
                up = tl.sum(u * x[None, :], 1).to(out_ptr.dtype.element_ty).to(tl.float32)
                act = (acc * tl.sigmoid(acc)).to(out_ptr.dtype.element_ty).to(tl.float32)
                acc = act * up
            if HAS_RES:
                acc += tl.load(res_ptr + m * N + rn, mask=n_live, other=0.0).to(tl.float32)
            tl.store(out_ptr + m * N + rn, acc.to(out_ptr.dtype.element_ty), mask=n_live)


def launch(x: torch.Tensor, weight: torch.Tensor, norm: tuple | None = None, gated: bool = False,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """The kernel itself: x (M, K), weight (N, K) (gated: (2F, K), gate rows then up rows), norm (weight, eps) of an
    RMSNorm over K, residual (M, N) -> (M, N) (gated: (M, F)) in the weight's dtype."""
    M, K = x.shape
    N = weight.shape[0] // 2 if gated else weight.shape[0]
    x = x.contiguous()
    out = torch.empty(M, N, device=x.device, dtype=weight.dtype)
    block_k = triton.next_power_of_2(K)
    block_n = max(1, TILE // block_k)
    norm_w, eps = norm if norm is not None else (weight, 0.0)
    res = residual.contiguous() if residual is not None else out
    _llama_linear_kernel[(triton.cdiv(N, block_n),)](
        x, norm_w, weight, res, out, N, K, eps, N, M=M, HAS_NORM=norm is not None, GATED=gated,
        HAS_RES=residual is not None, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4)
    return out


if triton is not None:
    # Custom ops: torch.compile (the decoder layers under `compile`) sees one opaque call each.
    @kernel_op("rms_linear", mutates_args=())
    def _rms_linear_op(x: torch.Tensor, norm_w: torch.Tensor, eps: float, weight: torch.Tensor,
                       gated: bool) -> torch.Tensor:
        return launch(x, weight, (norm_w, eps), gated)

    @_rms_linear_op.register_fake
    def _(x, norm_w, eps, weight, gated):
        return x.new_empty(x.shape[0], weight.shape[0] // (2 if gated else 1), dtype=weight.dtype)

    @kernel_op("plain_linear_residual", mutates_args=())
    def _linear_residual_op(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return launch(x, weight, residual=residual)

    @_linear_residual_op.register_fake
    def _(x, weight, residual):
        return residual.new_empty(x.shape[0], weight.shape[0], dtype=weight.dtype)


def applies(x: torch.Tensor, linear: nn.Module) -> bool:
    """Whether the fused kernel runs for input x (..., K) through `linear`: CUDA, at most two rows, a plain
    bf16/fp16 Linear without bias (an int8 one is not plain), K within a tile."""
    return (triton is not None and x.is_cuda and isinstance(linear, nn.Linear)
            and type(linear).forward is nn.Linear.forward and linear.bias is None
            and linear.weight.dtype in (torch.bfloat16, torch.float16) and x.dtype == linear.weight.dtype
            and x.numel() <= MAX_ROWS * x.shape[-1] and x.shape[-1] <= TILE and linear.weight.is_contiguous())


def rms_linear(x: torch.Tensor, norm: nn.Module, linear: nn.Linear) -> torch.Tensor:
    """linear(rms_norm(x)); x (..., K) -> (..., N). `norm` has `weight` and `eps` (an RMSNorm)."""
    if applies(x, linear):
        out = _rms_linear_op(x.reshape(-1, x.shape[-1]), norm.weight, norm.eps, linear.weight, False)
        return out.view(*x.shape[:-1], -1)
    return linear(norm(x))


def rms_gated_linear(x: torch.Tensor, norm: nn.Module, gate_up: nn.Linear) -> torch.Tensor:
    """silu(gate) * up of gate_up(rms_norm(x)), gate_up's output [gate | up]; x (..., K) -> (..., F)."""
    if applies(x, gate_up):
        out = _rms_linear_op(x.reshape(-1, x.shape[-1]), norm.weight, norm.eps, gate_up.weight, True)
        return out.view(*x.shape[:-1], -1)
    gate, up = gate_up(norm(x)).chunk(2, dim=-1)
    return F.silu(gate) * up


def linear_residual(x: torch.Tensor, linear: nn.Linear, residual: torch.Tensor) -> torch.Tensor:
    """residual + linear(x); x (..., K), residual (..., N)."""
    if applies(x, linear) and residual.dtype == linear.weight.dtype:
        out = _linear_residual_op(x.reshape(-1, x.shape[-1]), linear.weight,
                                                      residual.reshape(-1, residual.shape[-1]))
        return out.view(residual.shape)
    return residual + linear(x)
