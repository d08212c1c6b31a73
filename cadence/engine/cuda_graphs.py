"""The one way Cadence captures a CUDA graph: a warm-up run on a side stream first (lazy initialisation, cuBLAS
handles and cuDNN algorithm choices happen outside the capture), then the capture itself."""

from __future__ import annotations

from typing import Callable

import torch


def capture(fn: Callable, pool=None, warmup: Callable | None = None) -> tuple[torch.cuda.CUDAGraph, object]:
    """-> (graph, fn's output during capture: the tensors each replay rewrites). `warmup` (default: `fn`) is what
    runs uncaptured beforehand; callers whose `fn` changes live state pass one that puts the state back."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        (warmup or fn)()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    # thread_local: the engine's other threads keep launching their own work while this one captures
    with torch.inference_mode(), torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        out = fn()
    return graph, out
