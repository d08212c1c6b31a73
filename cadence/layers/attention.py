"""Causal self-attention over a prompt, with a kernel chosen for serving."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k, v (B, H, T, D) -> (B, H, T, D), each position attending to itself and those before it.

    On CUDA in half precision this calls FlashAttention directly. The SDPA dispatcher prefers cuDNN's attention
    on Hopper, which builds an execution plan for every new (batch, length) shape: with prompts of every length,
    admissions paid 50-100 ms (H100) each time a new length arrived. Flash kernels are compiled ahead of time.
    (T3's decode keeps the dispatcher's choice: its shapes are fixed and captured in graphs.)"""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True)[0]
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
