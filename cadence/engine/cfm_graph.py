"""The CFM solve (all Euler steps, CFG pair batched) captured as one CUDA graph per (rows, frames) bucket.

Rows: 1 (a finished request; frames in 128s) or a power of two (streaming windows of several requests; frames in
64s). Frames past a row's length and rows past the batch are padding: the estimator's convolutions are causal
and its attention masks padded keys, so the real frames never see them."""

from __future__ import annotations

import torch

from ..models.s3gen.flow import CFMDecoder
from .cuda_graphs import capture
from .shapes import next_pow2, round_up


class _Captured:
    def __init__(self, rows: int, frames: int, mel_dim: int, device, dtype):
        z = lambda *s: torch.zeros(*s, device=device, dtype=dtype)  # noqa: E731
        self.noise, self.mu, self.cond = z(rows, mel_dim, frames), z(rows, mel_dim, frames), z(rows, mel_dim, frames)
        self.mask, self.spks = z(rows, 1, frames), z(rows, mel_dim)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None


class CFMGraphs:
    def __init__(self, cfm: CFMDecoder, bucket: int = 128, batch_bucket: int = 64, max_graphs: int = 128):
        self.cfm, self.bucket, self.batch_bucket, self.max_graphs = cfm, bucket, batch_bucket, max_graphs
        self.captured: dict[tuple[int, int, int], _Captured] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def shape_for(self, rows: int, frames: int) -> tuple[int, int]:
        """The (rows, frames) bucket a solve of this size replays."""
        if rows == 1:
            return 1, round_up(frames, self.bucket)
        return next_pow2(rows), round_up(frames, self.batch_bucket)

    def prepare(self, rows: int, frames: int, n_steps: int, device, dtype) -> _Captured:
        """The graph for `rows` rows of up to `frames` mel frames (rounded up to the bucket), captured if new."""
        key = (*self.shape_for(rows, frames), n_steps)
        c = self.captured.get(key)
        if c is None:
            if len(self.captured) >= self.max_graphs:
                self.captured.pop(next(iter(self.captured)))
            c = _Captured(key[0], key[1], self.cfm.cfg.mel_dim, device, dtype)
            c.mask.fill_(1)
            c.graph, c.out = capture(lambda: self.cfm.solve(c.noise, c.mu, c.mask, c.spks, c.cond, n_steps),
                                     self.pool)
            self.captured[key] = c
        return c

    @torch.inference_mode()
    def solve(self, noise, mu, mask, spks, cond, n_steps: int):
        """Same signature and result as `CFMDecoder.solve`: noise, mu, cond (B, 80, T), mask (B, 1, T), spks (B, 80)."""
        B, _, T = mu.shape
        c = self.prepare(B, T, n_steps, mu.device, mu.dtype)
        for dst, src in ((c.noise, noise), (c.mu, mu), (c.cond, cond), (c.mask, mask), (c.spks, spks)):
            dst.zero_()
            if dst.dim() == 3:
                dst[:B, :, :T].copy_(src)
            else:
                dst[:B].copy_(src)
        c.graph.replay()
        return c.out[:B, :, :T].clone()


def warm_flow_graphs(tts, max_new_tokens: int, max_batch: int) -> None:
    """Capture the flow graphs the engine's requests would otherwise capture on first use: one request's solve
    for outputs of up to `max_new_tokens` tokens, and streaming windows of every batch size up to `max_batch`
    and every length up to the bounded context plus the largest window (an unbounded context captures its
    longer windows when they come)."""
    from .streaming import WINDOW_TOKENS
    runner = tts.audio_runner
    graphs = runner.cfm_graphs
    if graphs is None:
        return
    flow, dev, dt = tts.s3gen.flow.cfg, runner.device, runner.flow_dtype
    prompt = 250  # S3Gen's token prompt: at most 10 s at 25 Hz
    for frames in range(graphs.bucket, flow.token_mel_ratio * (prompt + max_new_tokens) + 1, graphs.bucket):
        graphs.prepare(1, frames, flow.n_timesteps, dev, dt)
    keep_prompt, keep_history = tts.config.stream_context_tokens()
    longest = (min(prompt, keep_prompt or prompt) + (keep_history or WINDOW_TOKENS[-1]) + WINDOW_TOKENS[-1]
               + tts.config.eos_check_every + flow.lookahead)
    rows = 2
    while rows < 2 * max_batch:
        for frames in range(graphs.batch_bucket, flow.token_mel_ratio * longest + graphs.batch_bucket,
                            graphs.batch_bucket):
            graphs.prepare(rows, frames, flow.n_timesteps, dev, dt)
        rows *= 2
