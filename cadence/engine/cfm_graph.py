"""CUDA graphs of S3Gen's flow: the CFM solve of one finished request (all Euler steps, CFG pair batched) per
length bucket, and the whole window of several streams (encoder, speaker projection and solve) per rows x
tokens bucket. A solve is ~10,000 small kernels: eager it is launch-bound, graphed it is compute-bound.

Frames past a row's length and rows past the batch are padding: the estimator's convolutions are causal and its
attention masks padded keys, so the real frames never see them."""

from __future__ import annotations

import math

import torch

from ..models.s3gen.flow import CausalFlow, CFMDecoder
from .cuda_graphs import capture


class _Static:
    """A graph's fixed input tensors, its output and the graph."""

    def __init__(self, **tensors):
        self.__dict__.update(tensors)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None


class CFMGraphs:
    """One request's CFM solve, frames rounded up to `bucket`."""

    def __init__(self, cfm: CFMDecoder, bucket: int = 128, max_graphs: int = 24):
        self.cfm, self.bucket, self.max_graphs = cfm, bucket, max_graphs
        self.captured: dict[tuple[int, int], _Static] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def prepare(self, frames: int, n_steps: int, device, dtype) -> _Static:
        """The graph for outputs of up to `frames` mel frames (rounded up to the bucket), captured if new."""
        frames = math.ceil(frames / self.bucket) * self.bucket
        key = (frames, n_steps)
        c = self.captured.get(key)
        if c is None:
            if len(self.captured) >= self.max_graphs:
                self.captured.pop(next(iter(self.captured)))
            z = lambda *s: torch.zeros(*s, device=device, dtype=dtype)  # noqa: E731
            d = self.cfm.cfg.mel_dim
            c = _Static(noise=z(1, d, frames), mu=z(1, d, frames), cond=z(1, d, frames), mask=z(1, 1, frames),
                        spks=z(1, d))
            c.graph, c.out = capture(lambda: self.cfm.solve(c.noise, c.mu, c.mask, c.spks, c.cond, n_steps),
                                     self.pool, warmup=None if not self.captured else lambda: None)
            self.captured[key] = c
        return c

    @torch.inference_mode()
    def solve(self, noise, mu, mask, spks, cond, n_steps: int):
        """Same signature and result as `CFMDecoder.solve` for one row."""
        T = mu.shape[-1]
        c = self.prepare(T, n_steps, mu.device, mu.dtype)
        for dst, src in ((c.noise, noise), (c.mu, mu), (c.cond, cond), (c.mask, mask)):
            dst.zero_()
            dst[..., :T].copy_(src)
        c.spks.copy_(spks)
        c.graph.replay()
        return c.out[..., :T].clone()


class WindowGraphs:
    """`CausalFlow.solve_padded` for streaming windows: rows rounded up to a power of two, tokens to `bucket`."""

    def __init__(self, flow: CausalFlow, bucket: int = 32, max_graphs: int = 96):
        self.flow, self.bucket, self.max_graphs = flow, bucket, max_graphs
        self.captured: dict[tuple[int, int, int], _Static] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def shape_for(self, rows: int, tokens: int) -> tuple[int, int]:
        return 2 ** math.ceil(math.log2(rows)), math.ceil(tokens / self.bucket) * self.bucket

    def prepare(self, rows: int, tokens: int, n_steps: int, device, dtype) -> _Static:
        key = (*self.shape_for(rows, tokens), n_steps)
        c = self.captured.get(key)
        if c is None:
            if len(self.captured) >= self.max_graphs:
                self.captured.pop(next(iter(self.captured)))
            R, T = key[0], key[1]
            F = T * self.flow.cfg.token_mel_ratio
            z = lambda *s: torch.zeros(*s, device=device, dtype=dtype)  # noqa: E731
            one = lambda: torch.ones(R, device=device, dtype=torch.long)  # noqa: E731 - padding rows: length 1
            c = _Static(tokens=torch.zeros(R, T, device=device, dtype=torch.long), lengths=one(), frames=one(),
                        noise=z(R, self.flow.cfg.mel_dim, F), cond=z(R, self.flow.cfg.mel_dim, F),
                        xvector=z(R, self.flow.cfg.spk_dim))
            run = lambda: self.flow.solve_padded(c.tokens, c.lengths, c.frames, c.noise, c.cond, c.xvector,  # noqa: E731
                                                 n_steps)
            # One eager warm-up per instance is enough for lazy initialisation; later shapes capture directly.
            c.graph, c.out = capture(run, self.pool, warmup=None if not self.captured else lambda: None)
            self.captured[key] = c
        return c

    @torch.inference_mode()
    def __call__(self, tokens, lengths, frames, noise, cond, xvector, n_steps: int):
        """Same arguments and result as `CausalFlow.solve_padded`."""
        B, T = tokens.shape
        c = self.prepare(B, T, n_steps, noise.device, noise.dtype)
        for dst, src in ((c.tokens, tokens), (c.noise, noise), (c.cond, cond), (c.xvector, xvector)):
            dst.zero_()
            dst[:B, ..., :src.shape[-1]].copy_(src)
        c.lengths.fill_(1)
        c.frames.fill_(1)
        c.lengths[:B].copy_(lengths)
        c.frames[:B].copy_(frames)
        c.graph.replay()
        return c.out[:B, :, :noise.shape[-1]].clone()
