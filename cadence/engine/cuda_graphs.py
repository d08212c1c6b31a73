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
    runs uncaptured beforehand; callers whose `fn` changes live state pass one that puts the state back."""
    stream = _warmup_stream(torch.device("cuda", torch.cuda.current_device()))
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        (warmup or fn)()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    # thread_local: the engine's other threads keep launching their own work while this one captures
    with torch.inference_mode(), torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        out = fn()
    return graph, out
