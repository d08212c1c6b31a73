"""The exponential-race noise of T3 sampling as a pure function of (seed, step, token id).

A request's noise used to come from a torch generator refilled by the host before every decode step: one kernel
launch per request per step, Python work that a busy server's other threads delayed (the GIL), and a host loop
inside the decode loop. Here every draw is a counter-based hash of the request's seed, its step and the token id,
computed inside the step itself (a CUDA graph node on the GPU): the same numbers alone or in any batch, on any
device, with no state to carry and nothing for the host to do.

The hash is Chris Wellons' `lowbias32` on 32-bit words (two rounds per draw); 32-bit products are formed from
16-bit halves in int64 so that no step overflows, in torch and in Triton alike, which is what keeps the CPU's and
the GPU's draws equal bit for bit before the logarithm."""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of torch
    triton = None

M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
C1, C2 = 0x7FEB352D, 0x846CA68B
INV_2_24 = 1.0 / (1 << 24)


# --- torch (any device) ----------------------------------------------------------------------------------------
def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32) held in int64, without an int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & M32


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, C1)
    x = x ^ (x >> 15)
    x = _mul32(x, C2)
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """seeds, steps (B,) int64 -> the two per-row 32-bit keys of this step (B,) int64."""
    a = _mix(seeds & M32)
    b = _mix(a ^ ((seeds >> 32) & M32))
    k1 = _mix((b + _mul32(steps & M32, GOLDEN)) & M32)
    return k1, _mix((k1 + 1) & M32)


def race_noise_torch(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """seeds, steps (B,) int64 -> Exp(1) draws (B, vocab) float32, one per token id."""
    k1, k2 = row_keys(seeds.long(), steps.long())
    ids = _mix(torch.arange(vocab, device=seeds.device, dtype=torch.long))
    x = _mix(_mix(k1[:, None] ^ ids[None]) ^ k2[:, None])
    u = ((x >> 8).float() + 0.5) * INV_2_24  # (0, 1), never 0 or 1
    return -torch.log(u)


# --- Triton (CUDA): the same integers, one kernel ----------------------------------------------------------------
if triton is not None:
    @triton.jit
    def _mul32_tl(x, c: tl.constexpr):
        return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & 0xFFFFFFFF

    @triton.jit
    def _mix_tl(x):
        x = x ^ (x >> 16)
        x = _mul32_tl(x, 0x7FEB352D)
        x = x ^ (x >> 15)
        x = _mul32_tl(x, 0x846CA68B)
        return x ^ (x >> 16)

    @triton.jit
    def _race_noise_kernel(out_ptr, seeds_ptr, steps_ptr, vocab, BLOCK: tl.constexpr):
        """Program (row, block of token ids)."""
        row = tl.program_id(0)
        ids = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        seed = tl.load(seeds_ptr + row).to(tl.int64)
        step = tl.load(steps_ptr + row).to(tl.int64)
        a = _mix_tl(seed & 0xFFFFFFFF)
        b = _mix_tl(a ^ ((seed >> 32) & 0xFFFFFFFF))
        k1 = _mix_tl((b + _mul32_tl(step & 0xFFFFFFFF, 0x9E3779B9)) & 0xFFFFFFFF)
        k2 = _mix_tl((k1 + 1) & 0xFFFFFFFF)
        x = _mix_tl(_mix_tl(k1 ^ _mix_tl(ids.to(tl.int64))) ^ k2)
        u = ((x >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
        tl.store(out_ptr + row * vocab + ids, -tl.log(u), mask=ids < vocab)


def race_noise_into(out: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Fill `out` (B, V) float32 contiguous with the draws of rows (seeds[i], steps[i]); seeds, steps (B,) int64.
    One Triton kernel on CUDA (capturable in a CUDA graph), the torch form elsewhere."""
    B, V = out.shape
    if triton is not None and out.is_cuda:
        BLOCK = 1024
        _race_noise_kernel[(B, triton.cdiv(V, BLOCK))](out, seeds, steps, V, BLOCK=BLOCK, num_warps=4)
    else:
        out.copy_(race_noise_torch(seeds, steps, V))
    return out


def race_noise(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """seeds, steps (B,) int64 on the model's device -> Exp(1) draws (B, vocab) float32."""
    out = torch.empty(seeds.shape[0], vocab, device=seeds.device, dtype=torch.float32)
    return race_noise_into(out, seeds, steps)
