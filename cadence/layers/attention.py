"""Attention calls with kernels chosen for serving: no per-shape set-up on the request path."""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F

CUDNN_ATTENTION = False
"""Whether `attention` lets PyTorch's dispatcher pick cuDNN's attention on CUDA (True: the dispatcher's own
choice; `scripts/first_shapes_probe.py` measures the two side by side)."""

_BACKEND_SWITCH = threading.Lock()  # PyTorch's backend switch is process-wide; Cadence calls from two threads
_captures = threading.local()


@contextlib.contextmanager
def dispatcher_choice():
    """Inside, `attention` on this thread leaves the backend to PyTorch's dispatcher (cuDNN's on Hopper). For CUDA
    graph captures off the request path (the CFM solve's, in the background): a capture meets its shape once, so
    cuDNN's plan is built once there, and every replay runs its kernel, the fastest measured for S3Gen's flow
    (an H100: one request's S3Gen 0.09 s with it, 0.12 s without; a padded batch of 8 eager 0.33 s against 0.50 s)."""
    before = dispatcher_chooses()
    _captures.dispatcher = True
    try:
        yield
    finally:
        _captures.dispatcher = before


def dispatcher_chooses() -> bool:
    """Whether `attention` on this thread leaves the backend to PyTorch's dispatcher now."""
    return CUDNN_ATTENTION or getattr(_captures, "dispatcher", False)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
              is_causal: bool = False) -> torch.Tensor:
    """`F.scaled_dot_product_attention`, on CUDA without cuDNN's backend (unless `CUDNN_ATTENTION`, or inside
    `dispatcher_choice`): q (B, H, Tq, D), k, v (B, H, Tk, D), attn_mask additive and broadcastable to (B, H, Tq,
    Tk), or None.

    On Hopper the dispatcher prefers cuDNN's attention, which builds an execution plan the first time it meets a
    shape, on the calling thread. Measured on an H100 (`scripts/first_shapes_probe.py`, docs/server.md): a
    server's load spent 2.3 s in it capturing T3's decode graphs; a first request's T3 took 1.54 s instead of
    0.42 s; each new padded batch shape of S3Gen's flow cost 0.58-1.0 s more than its next call (0.02-0.13 s with
    the kernels the dispatcher picks otherwise, flash and memory-efficient, compiled ahead of time). With a bias
    that is the memory-efficient kernel, slower than cuDNN's, so the estimator's padded batches take
    variable-length FlashAttention instead (`key_padding.padded_attention`), and graph captures, which meet their
    shape once, keep cuDNN's kernel (`dispatcher_choice`). The switch is turned off for this call only, under a
    lock, and put back as it was."""
    if not q.is_cuda or torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    with _BACKEND_SWITCH:  # the dispatcher's choice too: never while another thread has the switch off
        was = torch.backends.cuda.cudnn_sdp_enabled()
        if not dispatcher_chooses():
            torch.backends.cuda.enable_cudnn_sdp(False)
        try:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        finally:
            torch.backends.cuda.enable_cudnn_sdp(was)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k, v (B, H, T, D) -> (B, H, T, D), each position attending to itself and those before it.

    On CUDA in half precision this calls FlashAttention directly. The SDPA dispatcher prefers cuDNN's attention
    on Hopper, which builds an execution plan for every new (batch, length) shape: with prompts of every length,
    admissions paid 50-100 ms (H100) each time a new length arrived. Flash kernels are compiled ahead of time.
    Elsewhere `attention`."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True)[0]
    return attention(q, k, v, is_causal=True)


def cached_attention(q, k, v, k_cache, v_cache, positions, attn_mask) -> torch.Tensor:
    """One attention call of a KV-cached decoder layer; q, k, v (B, H, T, D) -> (B, H, T, D).

    Writes this step's keys/values into k_cache/v_cache (B, H, S, D) at `positions`: (T,) shared by all rows,
    or (B, 1) one position per row (a batch of requests at different lengths). Then attends over the first A
    cached positions, A = attn_mask.shape[-1]: `attn_mask` additive (0 or -inf), (T, A) or (B, 1, 1, A); or
    `RowLengths` (one query per row, row b over its first lengths[b] positions); or None for a prefill that
    starts at position 0 (plain causal attention over the new keys only)."""
    from .kv_write import write_kv
    write_kv(k, v, k_cache, v_cache, positions)
    if attn_mask is None:
        return causal_attention(q, k, v)
    return attend_cache(q, k_cache, v_cache, attn_mask)


def attend_cache(q, k_cache, v_cache, attn_mask) -> torch.Tensor:
    """q (B, H, T, D) over the cache (B, H, S, D), this step's keys already written; `attn_mask` (not None) as
    `cached_attention` takes it."""
    from .decode_attention import RowLengths, prefix_attention
    if isinstance(attn_mask, RowLengths):  # the whole cache: the kernel reads no key past a row's length
        return prefix_attention(q, k_cache, v_cache, attn_mask.lengths, attn_mask.chunk, attn_mask.shared)
    A = attn_mask.shape[-1]
    return attention(q, k_cache[:, :, :A], v_cache[:, :, :A], attn_mask)


def layer_mask(attn_mask, q_shape: tuple, x: torch.Tensor):
    """A backbone's mask argument -> what every layer's `cached_attention` takes, built once per step: a
    `PrefixMask` becomes the per-row kernel's `RowLengths` where the kernel applies, else an additive bias; a
    bool mask becomes an additive one; None stays None (causal prefill)."""
    from .decode_attention import PrefixMask, RowLengths, kernel_applies, prefix_bias
    if isinstance(attn_mask, PrefixMask):
        if kernel_applies(q_shape, x.device, x.dtype, any_size=attn_mask.chunk > 0):
            return RowLengths(attn_mask.lengths, attn_mask.chunk, attn_mask.shared)
        return prefix_bias(attn_mask.lengths, attn_mask.span, x.dtype)
    if attn_mask is not None:
        return torch.zeros(attn_mask.shape, device=x.device, dtype=x.dtype).masked_fill_(~attn_mask, float("-inf"))
    return None


def for_layer(attn_mask, i: int):
    """What layer `i` takes of `layer_mask`'s result: the same mask, with a shared prompt store sliced to
    that layer's keys and values."""
    from .decode_attention import RowLengths
    if isinstance(attn_mask, RowLengths) and attn_mask.shared is not None:
        return attn_mask._replace(shared=attn_mask.shared.layer(i))
    return attn_mask
