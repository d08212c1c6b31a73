"""CUDA graphs of S3Gen's flow: one Euler step of the CFM (CFG pair batched) captured per shape and replayed
for every step, for one finished request (frames in 128s) and for the windows of several streams (rows rounded
to a power of two, tokens in 32s; their encoder and speaker projection captured too). An estimator pass is
~1,000 small kernels: eager it is launch-bound, graphed it is compute-bound. Capturing one step rather than the
whole solve keeps each capture (and the engine's warm-up) ten times shorter, for ten replays per solve.

Frames past a row's length and rows past the batch are padding: the estimator's convolutions are causal and its
attention masks padded keys, so the real frames never see them."""

from __future__ import annotations

import math

import torch

from ..models.s3gen.flow import CausalFlow, CFMDecoder, cosine_time_grid
from .cuda_graphs import capture


class _Stepper:
    """One captured Euler step over fixed tensors: x is advanced in place from time t to r."""

    def __init__(self, cfm: CFMDecoder, rows: int, frames: int, device, dtype, pool):
        z = lambda *s: torch.zeros(*s, device=device, dtype=dtype)  # noqa: E731
        d = cfm.cfg.mel_dim
        self.cfm, self.pool = cfm, pool
        self.x, self.t, self.r = z(rows, d, frames), z(1), z(1)
        self.mu2, self.cond2, self.mask2, self.spks2 = z(2 * rows, d, frames), z(2 * rows, d, frames), \
            z(2 * rows, 1, frames), z(2 * rows, d)
        self.mask2.fill_(1)
        self._grids: dict[int, torch.Tensor] = {}
        self.graph, _ = capture(lambda: self.x.copy_(cfm.step(self.x, self.t, self.r, self.mu2, self.mask2,
                                                               self.spks2, self.cond2)), pool)

    def run(self, n_steps: int) -> torch.Tensor:
        grid = self._grids.get(n_steps)
        if grid is None:
            grid = self._grids[n_steps] = cosine_time_grid(n_steps, self.x.device).to(self.x.dtype)
        for i in range(n_steps):
            self.t.copy_(grid[i:i + 1])
            self.r.copy_(grid[i + 1:i + 2])
            self.graph.replay()
        return self.x


def _put(dst: torch.Tensor, src: torch.Tensor) -> None:
    """src into the leading corner of dst; the rest of dst zeroed (padding)."""
    dst.zero_()
    dst[tuple(slice(0, n) for n in src.shape)].copy_(src)


class CFMGraphs:
    """One request's CFM solve, frames rounded up to `bucket`."""

    def __init__(self, cfm: CFMDecoder, bucket: int = 128, max_graphs: int = 32):
        self.cfm, self.bucket, self.max_graphs = cfm, bucket, max_graphs
        self.captured: dict[int, _Stepper] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def prepare(self, frames: int, device, dtype) -> _Stepper:
        """The step graph for up to `frames` mel frames (rounded up to the bucket), captured if new."""
        frames = math.ceil(frames / self.bucket) * self.bucket
        s = self.captured.get(frames)
        if s is None:
            if len(self.captured) >= self.max_graphs:
                self.captured.pop(next(iter(self.captured)))
            s = self.captured[frames] = _Stepper(self.cfm, 1, frames, device, dtype, self.pool)
        return s

    @torch.inference_mode()
    def solve(self, noise, mu, mask, spks, cond, n_steps: int):
        """Same signature and result as `CFMDecoder.solve` for one row."""
        T = mu.shape[-1]
        s = self.prepare(T, mu.device, mu.dtype)
        for dst, src in zip((s.mu2, s.mask2, s.spks2, s.cond2), self.cfm.guided_inputs(mu, mask, spks, cond)):
            _put(dst, src)
        _put(s.x, noise)
        return s.run(n_steps)[..., :T].clone()


class WindowGraphs:
    """`CausalFlow.solve_padded` for streaming windows: rows rounded up to a power of two, tokens to `bucket`."""

    def __init__(self, flow: CausalFlow, bucket: int = 32, max_graphs: int = 96):
        self.flow, self.bucket, self.max_graphs = flow, bucket, max_graphs
        self.captured: dict[tuple[int, int], tuple] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def shape_for(self, rows: int, tokens: int) -> tuple[int, int]:
        return 2 ** math.ceil(math.log2(rows)), math.ceil(tokens / self.bucket) * self.bucket

    def prepare(self, rows: int, tokens: int, device, dtype) -> tuple:
        """(inputs, encoder graph, step graph) for this many rows and tokens (bucketed), captured if new."""
        key = self.shape_for(rows, tokens)
        hit = self.captured.get(key)
        if hit is None:
            if len(self.captured) >= self.max_graphs:
                self.captured.pop(next(iter(self.captured)))
            R, T = key
            flow, F = self.flow, T * self.flow.cfg.token_mel_ratio
            step = _Stepper(flow.decoder, R, F, device, dtype, self.pool)
            inputs = {"tokens": torch.zeros(R, T, device=device, dtype=torch.long),
                      "lengths": torch.ones(R, device=device, dtype=torch.long),  # padding rows: length 1
                      "frames": torch.ones(R, device=device, dtype=torch.long),
                      "cond": torch.zeros(R, flow.cfg.mel_dim, F, device=device, dtype=dtype),
                      "xvector": torch.zeros(R, flow.cfg.spk_dim, device=device, dtype=dtype)}

            def encode():  # everything but the Euler steps, into the step graph's fixed inputs
                mu, _ = flow.encode(inputs["tokens"], inputs["lengths"])
                mask = (torch.arange(F, device=device)[None] < inputs["frames"][:, None])[:, None].to(dtype)
                spks = flow.speaker(inputs["xvector"]).to(dtype)
                for dst, src in zip((step.mu2, step.mask2, step.spks2, step.cond2),
                                    flow.decoder.guided_inputs(mu, mask, spks, inputs["cond"])):
                    dst.copy_(src)
            graph, _ = capture(encode, self.pool)
            hit = self.captured[key] = (inputs, graph, step)
        return hit

    @torch.inference_mode()
    def __call__(self, tokens, lengths, frames, noise, cond, xvector, n_steps: int):
        """Same arguments and result as `CausalFlow.solve_padded`."""
        B = tokens.shape[0]
        inputs, encode, step = self.prepare(B, tokens.shape[1], noise.device, noise.dtype)
        for name, src in (("tokens", tokens), ("cond", cond), ("xvector", xvector)):
            _put(inputs[name], src)
        for name, src in (("lengths", lengths), ("frames", frames)):
            inputs[name].fill_(1)
            inputs[name][:B].copy_(src)
        encode.replay()
        _put(step.x, noise)
        return step.run(n_steps)[:B, :, :noise.shape[-1]].clone()
