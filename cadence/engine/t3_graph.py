"""T3 decoding with CUDA graphs: one captured step per attention-length bucket over one static KV cache.

A step reads only static device buffers (last hidden state, positions, knobs, token counts, noise) and
writes the next hidden state, the sampled token and the done flag; the step draws its own noise from the
request's seed and step (`layers.race_noise`); the host replays graphs and looks at the done flag every few steps."""

from __future__ import annotations

import torch

from ..layers.decode_attention import PrefixMask
from ..layers.race_noise import race_noise_into
from ..layers.sampling import cfg_combine, filters_for, sample
from ..models.t3 import T3
from ..sampling_params import SamplingParams
from .alignment_guard import AlignmentGuard
from .cuda_graphs import capture

BUCKETS = (256, 512, 1024, 2048, 4096, 8192)


class T3GraphDecoder:
    attention_chunk = 32
    """Keys per program of the split one-query attention kernel over the live prefix (`PrefixMask.chunk`); 0:
    SDPA over the whole length bucket with a mask. One or two rows (a single request) make few (row, head) pairs,
    so the prefix is split finely to fill the GPU."""

    def __init__(self, t3: T3, rows: int, max_len: int, max_steps: int):
        c = t3.cfg
        dev, dt = t3.device, t3.dtype
        self.t3, self.rows, self.max_steps = t3, rows, max_steps
        self.buckets = [b for b in BUCKETS if b < max_len] + [max_len]
        self.max_len = max_len
        shape = (c.n_layers, rows, c.n_heads, max_len, c.head_dim)
        self.k = torch.zeros(shape, device=dev, dtype=dt)
        self.v = torch.zeros(shape, device=dev, dtype=dt)
        self.hidden = torch.zeros(rows, c.dim, device=dev, dtype=dt)
        self.pos = torch.zeros(1, device=dev, dtype=torch.long)
        self.speech_pos = torch.zeros(1, device=dev, dtype=torch.long)
        self.step = torch.zeros(1, device=dev, dtype=torch.long)
        self.counts = torch.zeros(1, c.speech_vocab, device=dev, dtype=torch.int32)
        self.noise = torch.ones(1, c.speech_vocab, device=dev, dtype=torch.float32)
        self.seed = torch.zeros(1, device=dev, dtype=torch.long)
        self.allowed = torch.ones(c.speech_vocab, device=dev, dtype=torch.bool)
        self.out = torch.zeros(max_steps + 1, device=dev, dtype=torch.long)
        self.done = torch.zeros(1, device=dev, dtype=torch.bool)
        self.knobs = {k: torch.zeros(1, device=dev) for k in ("cfg", "rep", "temp", "min_p", "top_p")}
        self.top_k = torch.zeros(1, device=dev, dtype=torch.long)
        self.guard = AlignmentGuard.build(t3, 1, rows, max_len)
        self.filters = filters_for(dev)  # the sampling filters: one kernel on CUDA
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.pool = torch.cuda.graph_pool_handle()
        for attend in self.buckets:  # the common case (no top-k, no top-p) is captured up front
            self._graph(attend, False, False)

    def _step(self, attend: int, use_top_k: bool, use_top_p: bool):
        t3, c = self.t3, self.t3.cfg
        logits = t3.speech_logits(self.hidden).float().masked_fill(~self.allowed, float("-inf"))
        kn = self.knobs
        guided = self.guard.decide(cfg_combine(logits[:1], logits[1:2] if self.rows == 2 else None, kn["cfg"]), 1)
        probs = self.filters(guided, None, self.counts, kn["cfg"], kn["rep"], kn["temp"], kn["min_p"],
                             kn["top_p"], self.top_k, use_top_k, use_top_p, penalty_last=t3.penalty_last)
        token = sample(probs, race_noise_into(self.noise, self.seed, self.step))
        self.guard.observe(token, 1)
        self.out.index_copy_(0, self.step.clamp(max=self.max_steps), token)
        self.counts.scatter_add_(1, token[:, None], torch.ones_like(token[:, None], dtype=torch.int32))
        self.done |= token == c.stop_speech
        x = t3.speech_step_embed(token, self.speech_pos).to(self.hidden.dtype)[:, None].expand(self.rows, 1, -1)
        if self.attention_chunk:  # the split kernel reads each row's live prefix only
            mask = PrefixMask((self.pos + 1).to(torch.int32).repeat(self.rows), attend, self.attention_chunk)
        else:
            mask = (torch.arange(attend, device=x.device) <= self.pos)[None]
        h = t3.forward_backbone(x, self.k[..., :attend, :], self.v[..., :attend, :], self.pos, mask)
        self.guard.record(self.k[..., :attend, :], slice(0, 1), self.pos + 1)
        self.hidden.copy_(h)
        self.pos += 1
        self.speech_pos += 1
        self.step += 1

    def _graph(self, attend: int, use_top_k: bool, use_top_p: bool) -> torch.cuda.CUDAGraph:
        key = (attend, use_top_k, use_top_p)
        if key not in self.graphs:
            self.pos.zero_()  # warm-up and capture write at `pos`: keep it inside the smallest bucket
            self.step.zero_()
            self.graphs[key], _ = capture(lambda: self._step(*key), self.pool)
        return self.graphs[key]

    def close(self) -> None:
        """Free the graphs (and with them their memory pool) and the KV cache now, not at garbage collection."""
        for g in self.graphs.values():
            g.reset()
        self.graphs.clear()
        self.k = self.v = None

    def bucket_for(self, length: int) -> int:
        for b in self.buckets:
            if length <= b:
                return b
        raise ValueError(f"sequence of {length} positions exceeds the KV cache ({self.max_len})")

    @torch.inference_mode()
    def generate(self, prefill: torch.Tensor, params: SamplingParams, seed: int,
                 steps: int, eos_check_every: int, speech_only: bool = False) -> list[int]:
        t3, c = self.t3, self.t3.cfg
        rows, L, _ = prefill.shape
        if rows != self.rows or L + steps > self.max_len or steps > self.max_steps:
            raise ValueError("request does not fit this decoder")
        flags = (params.top_k > 0, params.top_p < 1.0)
        for b in self.buckets:  # capture missing variants first: a warm-up step writes the state buffers
            self._graph(b, *flags)
        h = t3.forward_backbone(prefill.to(self.hidden.dtype), self.k, self.v, torch.arange(L, device=prefill.device),
                                None)
        self.hidden.copy_(h)
        self.guard.record(self.k[..., :L, :], slice(0, 1), torch.tensor([L], device=prefill.device))
        self.guard.start(0, L, params.alignment_stop is not False)
        self.pos.fill_(L)
        self.speech_pos.fill_(1)
        self.step.zero_()
        self.seed.fill_(seed)
        self.counts.zero_()
        self.counts[0, c.start_speech] = 1
        self.done.zero_()
        self.allowed.fill_(True)
        if speech_only:  # only real speech tokens and EOS (benchmarks on random weights)
            self.allowed[c.start_speech:] = False
            self.allowed[c.stop_speech] = True
        for name, value in (("cfg", params.cfg_weight), ("rep", params.repetition_penalty),
                            ("temp", params.temperature), ("min_p", params.min_p), ("top_p", params.top_p)):
            self.knobs[name].fill_(value)
        self.top_k.fill_(params.top_k)
        n = 0
        for i in range(steps):
            self.graphs[(self.bucket_for(L + i + 1), *flags)].replay()
            if i == 0 and not t3.start_in_history:  # later steps' penalty sees only the generated tokens
                self.counts[0, c.start_speech] -= 1
            n = i + 1
            if n % eos_check_every == 0 and bool(self.done):
                break
        tokens = self.out[:n].tolist()
        if c.stop_speech in tokens:
            tokens = tokens[: tokens.index(c.stop_speech) + 1]
        return tokens
