"""The CFM solve (all Euler steps, CFG pair batched) captured as one CUDA graph per length bucket.

Frames past a request's length are padding: the estimator's convolutions are causal and its attention masks
padded keys, so the real frames never see them."""

from __future__ import annotations

import math

import torch

from ..models.s3gen.flow import CFMDecoder


class _Captured:
    def __init__(self, frames: int, mel_dim: int, device, dtype):
        z = lambda *s: torch.zeros(*s, device=device, dtype=dtype)  # noqa: E731
        self.noise, self.mu, self.cond = z(1, mel_dim, frames), z(1, mel_dim, frames), z(1, mel_dim, frames)
        self.mask, self.spks = z(1, 1, frames), z(1, mel_dim)
        self.graph = torch.cuda.CUDAGraph()
        self.out: torch.Tensor | None = None


class CFMGraphs:
    def __init__(self, cfm: CFMDecoder, bucket: int = 128, max_graphs: int = 24):
        self.cfm, self.bucket, self.max_graphs = cfm, bucket, max_graphs
        self.captured: dict[tuple[int, int], _Captured] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def _capture(self, frames: int, n_steps: int, device, dtype) -> _Captured:
        c = _Captured(frames, self.cfm.cfg.mel_dim, device, dtype)
        c.mask.fill_(1)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            self.cfm.solve(c.noise, c.mu, c.mask, c.spks, c.cond, n_steps)
        torch.cuda.current_stream().wait_stream(stream)
        with torch.inference_mode(), torch.cuda.graph(c.graph, pool=self.pool, capture_error_mode="thread_local"):
            c.out = self.cfm.solve(c.noise, c.mu, c.mask, c.spks, c.cond, n_steps)
        return c

    def prepare(self, frames: int, n_steps: int, device, dtype) -> _Captured:
        """The graph for outputs of up to `frames` mel frames (rounded up to the bucket), captured if new."""
        frames = math.ceil(frames / self.bucket) * self.bucket
        key = (frames, n_steps)
        c = self.captured.get(key)
        if c is None:
            if len(self.captured) >= self.max_graphs:
                self.captured.pop(next(iter(self.captured)))
            c = self.captured[key] = self._capture(frames, n_steps, device, dtype)
        return c

    @torch.inference_mode()
    def solve(self, noise, mu, mask, spks, cond, n_steps: int):
        T = mu.shape[-1]
        c = self.prepare(T, n_steps, mu.device, mu.dtype)
        for dst, src in ((c.noise, noise), (c.mu, mu), (c.cond, cond), (c.mask, mask)):
            dst.zero_()
            dst[..., :T].copy_(src)
        c.spks.copy_(spks)
        c.graph.replay()
        return c.out[..., :T].clone()
