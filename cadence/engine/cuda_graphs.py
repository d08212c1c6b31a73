"""The one way Cadence captures a CUDA graph: a warm-up run on a side stream first (lazy initialisation, cuBLAS
handles and cuDNN algorithm choices happen outside the capture), then the capture itself."""

from __future__ import annotations

import threading
from typing import Callable

import torch

_local = threading.local()


def _warmup_stream(device: torch.device) -> torch.cuda.Stream:
    """One warm-up stream per thread and device, reused: cuBLAS keeps a workspace (32 MiB on Hopper) for every
    stream it has run on, for the life of the process, so a fresh stream per capture leaks one workspace per
    capture (measured under offload, which captures T3's decode graphs at every lease)."""
    streams = _local.__dict__.setdefault("streams", {})
    if device not in streams:
        streams[device] = torch.cuda.Stream(device)
    return streams[device]


def capture(fn: Callable, pool=None, warmup: Callable | None = None) -> tuple[torch.cuda.CUDAGraph, object]:
    """-> (graph, fn's output during capture: the tensors each replay rewrites). `warmup` (default: `fn`) is what
    runs uncaptured beforehand; callers whose `fn` changes live state pass one that puts the state back.

    Not `torch.cuda.graph`: that synchronises the device and empties the allocator's cache before every capture,
    so each graph captured while serving (a new shape) stalled the other GPU thread and sent every later
    allocation back to cudaMalloc (measured: the first burst of a size after a capture admitted 8-16 streams in
    ~100 ms instead of ~15). Warm-up and capture share one stream per thread."""
    stream = _warmup_stream(torch.device("cuda", torch.cuda.current_device()))
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.inference_mode():
        (warmup or fn)()
        # thread_local: the engine's other threads keep launching their own work while this one captures
        graph.capture_begin(*(() if pool is None else (pool,)), capture_error_mode="thread_local")
        try:
            out = fn()
        finally:
            graph.capture_end()
    torch.cuda.current_stream().wait_stream(stream)
    return graph, out
