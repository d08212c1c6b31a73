"""The CFM solve (all Euler steps, CFG pair batched) captured as one CUDA graph per (rows, frames) bucket.

Rows: 1 (a finished request; frames in 128s) or a power of two (streaming windows of several requests; frames in
64s). Frames past a row's length and rows past the batch are padding: the estimator's convolutions are causal
and its attention masks padded keys, so the real frames never see them."""

from __future__ import annotations

import contextlib
import threading

import torch

from ..layers.attention import dispatcher_choice
from ..models.s3gen.flow import CFMDecoder
from .cuda_graphs import capture
from .shapes import next_pow2, round_up

CAPTURE_WITH_CUDNN = True
"""Whether a capture lets PyTorch's dispatcher pick the estimator's attention (cuDNN's, with the key-padding bias:
its plan built once in the capture) or keeps the variable-length FlashAttention of eager calls (False; the A/B of
`scripts/cfm_capture_probe.py`)."""


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
        # Background warm-up captures from the engine thread while the audio worker solves: one capture at a time,
        # and with `lazy` a solve whose graph is not there yet runs eagerly and asks for it.
        self.lock = threading.Lock()
        self.lazy = False
        self.wanted: list[tuple[int, int, int]] = []

    def shape_for(self, rows: int, frames: int) -> tuple[int, int]:
        """The (rows, frames) bucket a solve of this size replays."""
        if rows == 1:
            return 1, round_up(frames, self.bucket)
        return next_pow2(rows), round_up(frames, self.batch_bucket)

    def prepare(self, rows: int, frames: int, n_steps: int, device, dtype) -> _Captured:
        """The graph for `rows` rows of up to `frames` mel frames (rounded up to the bucket), captured if new."""
        key = (*self.shape_for(rows, frames), n_steps)
        with self.lock:
            return self._prepare(key, device, dtype)

    def _prepare(self, key, device, dtype) -> _Captured:
        c = self.captured.get(key)
        if c is None:
            if len(self.captured) >= self.max_graphs:
                self.captured.pop(next(iter(self.captured)))
            c = _Captured(key[0], key[1], self.cfm.cfg.mel_dim, device, dtype)
            c.mask.fill_(1)
            n_steps = key[2]
            choice = dispatcher_choice() if CAPTURE_WITH_CUDNN else contextlib.nullcontext()
            with choice:  # with cuDNN's kernel: its plan built here once, its kernel replayed
                c.graph, c.out = capture(lambda: self.cfm.solve(c.noise, c.mu, c.mask, c.spks, c.cond, n_steps),
                                         self.pool)
            self.captured[key] = c
        return c

    @torch.inference_mode()
    def solve(self, noise, mu, mask, spks, cond, n_steps: int):
        """Same signature and result as `CFMDecoder.solve`: noise, mu, cond (B, 80, T), mask (B, 1, T), spks (B, 80)."""
        B, _, T = mu.shape
        key = (*self.shape_for(B, T), n_steps)
        if self.lazy and key not in self.captured:
            with self.lock:
                if key not in self.wanted:
                    self.wanted.append(key)
            return self.cfm.solve(noise, mu, mask, spks, cond, n_steps)
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
    """Capture the flow graphs the engine's requests would otherwise capture on first use (`flow_graph_shapes`)."""
    runner = tts.audio_runner
    if runner.cfm_graphs is None:
        return
    for rows, frames, steps in flow_graph_shapes(tts, max_new_tokens, max_batch):
        runner.cfm_graphs.prepare(rows, frames, steps, runner.device, runner.flow_dtype)


def flow_graph_shapes(tts, max_new_tokens: int, max_batch: int) -> list[tuple[int, int, int]]:
    """(rows, frames, steps) of one request's solve for outputs of up to `max_new_tokens` tokens, and of
    streaming windows of every batch size up to `max_batch` and every length up to the bounded context plus the
    largest window (an unbounded context captures its longer windows when they come)."""
    graphs = tts.audio_runner.cfm_graphs
    if graphs is None:
        return []
    flow = tts.s3gen.flow.cfg
    prompt = 250  # S3Gen's token prompt: at most 10 s at 25 Hz
    shapes = [(1, frames, flow.n_timesteps) for frames in
              range(graphs.bucket, flow.token_mel_ratio * (prompt + max_new_tokens) + 1, graphs.bucket)]
    keep_prompt, keep_history = tts.config.stream_context_tokens()
    widest = max(tts.config.stream_windows)
    longest = (min(prompt, keep_prompt or prompt) + (keep_history or widest) + widest
               + tts.config.eos_check_every + flow.lookahead)
    rows = 2
    while rows < 2 * max_batch:
        shapes += [(rows, frames, flow.n_timesteps) for frames in
                   range(graphs.batch_bucket, flow.token_mel_ratio * longest + graphs.batch_bucket, graphs.batch_bucket)]
        rows *= 2
    return shapes
