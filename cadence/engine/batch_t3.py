"""Batched T3 decoding over request slots: continuous batching with a static KV cache.

Slot s holds one request in `rows_per_slot` rows of the KV cache: rows 2s (conditional) and 2s + 1
(unconditional CFG row) for a CFG pair, row s alone for a family without CFG (Turbo). Every row carries its
own position, so requests at different lengths share one decode step. A step covers the
first `b` slots (b from a ladder of batch sizes) and attends over the first A cache positions (A from a
ladder of lengths); each (b, A, filters) variant is one CUDA graph on the GPU. All step inputs are static
device buffers, the sampling noise included: each row's draws are a function of its request's seed and step
(`layers.race_noise`), computed inside the step, so a request's tokens depend on its seed and step alone, never
on its batch-mates, and the host does nothing per request per step."""

from __future__ import annotations

import torch

from ..layers.decode_attention import PrefixMask
from ..layers.race_noise import race_noise_into
from ..layers.sampling import cfg_combine, filters_for, sample
from ..models.t3 import T3
from ..sampling_params import SamplingParams
from .alignment_guard import AlignmentGuard
from .cuda_graphs import capture
from .shared_prompts import SharedPrompts
from .t3_runner import prefill_rows

# Attention lengths a step can be captured for: a step reads every row's KV up to the bucket, so buckets are fine
# (128 positions) where requests live and coarse beyond.
LENGTH_LADDER = (128, 256, 384, 512, 640, 768, 896, 1024, 1280, 1536, 2048, 3072, 4096, 6144, 8192)


# Rows from which a step reads the voices' prompt keys once per voice (cascade attention, `SharedPrompts`); below,
# its extra kernel costs more than it saves (H100, Turbo: 0.91x the step at 16 rows, 1.01x at 32, 1.10x at 64).
CASCADE_MIN_ROWS = 64


def batch_ladder(max_slots: int) -> list[int]:
    sizes, b = [], 1
    while b < max_slots:
        sizes.append(b)
        b *= 2
    return sizes + [max_slots]


class BatchDecoder:
    """Static state for `slots` concurrent requests of at most `slot_len` positions each."""

    def __init__(self, t3: T3, slots: int, slot_len: int, use_graphs: bool, rows_per_slot: int = 2,
                 shared_voices: int = 0):
        """`shared_voices` > 0: keep that many voices' prompt keys and values once for all their rows
        (`SharedPrompts`), which the decode kernel reads instead of each row's copy."""
        if rows_per_slot not in (1, 2):
            raise ValueError(f"rows_per_slot must be 1 or 2 (a CFG pair), got {rows_per_slot}")
        c = t3.cfg
        dev, dt = t3.device, t3.dtype
        self.t3, self.slots, self.slot_len, self.use_graphs = t3, slots, slot_len, use_graphs
        self.per_slot = rows_per_slot
        self.sizes = batch_ladder(slots)
        self.lengths = [a for a in LENGTH_LADDER if a < slot_len] + [slot_len]
        rows = rows_per_slot * slots
        z = lambda *shape, dtype=torch.long: torch.zeros(*shape, device=dev, dtype=dtype)  # noqa: E731
        self.k = z(c.n_layers, rows, c.n_heads, slot_len, c.head_dim, dtype=dt)
        self.v = z(c.n_layers, rows, c.n_heads, slot_len, c.head_dim, dtype=dt)
        self.hidden = z(rows, c.dim, dtype=dt)
        self.pos = z(rows)  # next cache position of each row
        self.speech_pos = z(slots)
        self.step = z(slots)
        self.seeds = z(slots)  # each request's seed: its sampling noise is drawn from (seed, step)
        self.active = z(slots)  # 1 while a request owns the slot: positions of free slots stay put
        self.counts = z(slots, c.speech_vocab, dtype=torch.int32)
        self.noise = torch.ones(slots, c.speech_vocab, device=dev)
        self.out = z(slots, slot_len)
        self.done = z(slots, dtype=torch.bool)
        self.speech_only = z(slots, dtype=torch.bool)
        self.ignore_eos = z(slots, dtype=torch.bool)
        self.knobs = {k: z(slots, dtype=torch.float32) for k in ("cfg", "rep", "temp", "min_p", "top_p")}
        self.top_k = z(slots)
        self.not_speech = torch.ones(c.speech_vocab, device=dev, dtype=torch.bool)
        self.not_speech[: c.start_speech] = False
        self.not_speech[c.stop_speech] = False
        self.eos_only = torch.zeros(c.speech_vocab, device=dev, dtype=torch.bool)
        self.eos_only[c.stop_speech] = True
        self.guard = AlignmentGuard.build(t3, slots, rows_per_slot, slot_len)  # the multilingual EOS rules
        self.filters = filters_for(dev)  # the sampling filters: one kernel on CUDA
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.pool = torch.cuda.graph_pool_handle() if use_graphs else None
        self.lazy = False  # a step without its graph yet runs eagerly and asks for the graph (background warm-up)
        self.wanted: list[tuple] = []
        self.prompts = SharedPrompts(t3, shared_voices, rows) if shared_voices else None

    @property
    def device(self):
        return self.hidden.device

    # --- slot management (between steps) ---------------------------------------------------------------
    @torch.inference_mode()
    def admit(self, slot: int, prefill: torch.Tensor, params: SamplingParams, speech_only: bool = False,
              ignore_eos: bool = False, prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
              voice: tuple[str, torch.Tensor] | None = None) -> None:
        """Prefill one request's rows (rows_per_slot, L, C) into `slot` and load its sampling knobs. `prefix`:
        the keys and values of the voice's first prompt positions (`T3Runner.voice_prefix`), copied in. `voice`:
        (key, prompt embeddings (1, P, C)) of the voice, whose P positions the rows share (`SharedPrompts`)."""
        L = prefill.shape[1]
        r = self._rows(slot)
        h = prefill_rows(self.t3, prefill.to(self.hidden.dtype), self.k[:, r], self.v[:, r], prefix)
        self._share(slot, voice)
        self.guard.record(self.k[:, r, :, :, :L], slice(slot, slot + 1), torch.tensor([L], device=self.device))
        self._load(slot, L, h, params, speech_only, ignore_eos)

    @torch.inference_mode()
    def admit_many(self, entries: list[tuple]) -> None:
        """Several (slot, prefill (rows_per_slot, L_i, C), params, speech_only, ignore_eos[, prefix[, voice]]) in
        one right-padded forward: causal attention keeps each prompt from seeing its padding, whose keys land past
        the prompt where decoding overwrites them before any step attends there."""
        if len(entries) == 1:
            return self.admit(*entries[0])
        voices = [e[6] if len(e) > 6 else None for e in entries]
        entries = [e[:5] for e in entries]  # a voice prefix helps a lone admission; here all rows run from 0
        c, dt, n = self.t3.cfg, self.hidden.dtype, self.per_slot
        lengths = [e[1].shape[1] for e in entries]
        T = max(lengths)
        x = torch.zeros(n * len(entries), T, c.dim, device=self.device, dtype=dt)
        for i, e in enumerate(entries):
            x[n * i: n * i + n, : lengths[i]] = e[1].to(dt)
        shape = (c.n_layers, x.shape[0], c.n_heads, T, c.head_dim)
        k, v = torch.empty(shape, device=self.device, dtype=dt), torch.empty(shape, device=self.device, dtype=dt)
        last = torch.tensor(lengths, device=self.device).repeat_interleave(n) - 1
        h = self.t3.forward_backbone(x, k, v, torch.arange(T, device=self.device), None, last=last)
        slots = torch.tensor([e[0] for e in entries], device=self.device)
        self.guard.record(k, slots, last[::n] + 1, query_at=last[::n])
        rows = torch.tensor([r for e in entries for r in range(n * e[0], n * e[0] + n)], device=self.device)
        self.k[:, rows, :, :T] = k
        self.v[:, rows, :, :T] = v
        for i, e in enumerate(entries):
            self._share(e[0], voices[i])
            self._load(e[0], lengths[i], h[n * i: n * i + n], *e[2:])

    def _share(self, slot: int, voice: tuple[str, torch.Tensor] | None) -> None:
        if self.prompts is not None and voice is not None:
            self.prompts.attach(slot, self._rows(slot), voice, self.k, self.v)

    def _rows(self, slot: int) -> slice:
        return slice(self.per_slot * slot, self.per_slot * slot + self.per_slot)

    def _load(self, slot: int, L: int, h: torch.Tensor, params: SamplingParams, speech_only: bool = False,
              ignore_eos: bool = False) -> None:
        c = self.t3.cfg
        r = self._rows(slot)
        self.hidden[r] = h
        self.pos[r] = L
        self.speech_pos[slot] = 1
        self.step[slot] = 0
        self.seeds[slot] = params.seed or 0
        self.counts[slot].zero_()
        self.counts[slot, c.start_speech] = 1  # the reference's history starts with the start token
        self.done[slot] = False
        self.speech_only[slot] = speech_only
        self.ignore_eos[slot] = ignore_eos
        for name, value in (("cfg", params.cfg_weight), ("rep", params.repetition_penalty),
                            ("temp", params.temperature), ("min_p", params.min_p), ("top_p", params.top_p)):
            self.knobs[name][slot] = value
        self.top_k[slot] = params.top_k
        self.guard.start(slot, L, params.alignment_stop is not False and not ignore_eos)  # ignore_eos: benchmarks
        self.active[slot] = 1

    def free(self, slot: int) -> None:
        if self.prompts is not None:
            self.prompts.detach(slot, self._rows(slot))
        self.active[slot] = 0
        self.pos[self._rows(slot)] = 0

    def tokens(self, slot: int, n: int) -> torch.Tensor:
        return self.out[slot, :n]

    # --- the step ----------------------------------------------------------------------------------------
    def _step(self, b: int, attend: int, use_top_k: bool, use_top_p: bool) -> None:
        """One decode step for slots [0, b): sample every slot's next token, then run its rows through the
        backbone attending over positions [0, attend)."""
        t3, c, n = self.t3, self.t3.cfg, self.per_slot
        rows = n * b
        logits = t3.speech_logits(self.hidden[:rows]).float().view(b, n, -1)  # (b, cond[|uncond], V)
        banned = (self.speech_only[:b, None] & self.not_speech) | (self.ignore_eos[:b, None] & self.eos_only)
        logits = logits.masked_fill(banned[:, None], float("-inf"))
        kn = {k: t[:b] for k, t in self.knobs.items()}
        guided = self.guard.decide(cfg_combine(logits[:, 0], logits[:, 1] if n == 2 else None, kn["cfg"]), b)
        probs = self.filters(guided, None, self.counts[:b], kn["cfg"], kn["rep"], kn["temp"], kn["min_p"],
                             kn["top_p"], self.top_k[:b], use_top_k, use_top_p, penalty_last=t3.penalty_last)
        token = sample(probs, race_noise_into(self.noise[:b], self.seeds[:b], self.step[:b]))  # (b,)
        self.guard.observe(token, b)
        slots = torch.arange(b, device=token.device)
        self.out[slots, self.step[:b].clamp(max=self.slot_len - 1)] = token
        self.counts[:b].scatter_add_(1, token[:, None], torch.ones_like(token[:, None], dtype=torch.int32))
        if not t3.start_in_history:  # after its first step a request's penalty sees only generated tokens
            self.counts[:b, c.start_speech] -= (self.step[:b] == 0).int() * self.active[:b].int()
        self.done[:b] |= token == c.stop_speech
        x = t3.speech_step_embed(token, self.speech_pos[:b]).to(self.hidden.dtype)
        x = x.repeat_interleave(n, dim=0)[:, None]  # (n b, 1, C): a CFG pair's rows both take the sampled token
        pos = self.pos[:rows]
        # each row attends to its own positions so far (this step's key included), within the bucket
        shared = self.prompts.for_rows(rows) if self.prompts is not None and rows >= CASCADE_MIN_ROWS else None
        mask = PrefixMask((pos + 1).clamp(max=attend).to(torch.int32), attend, shared=shared)
        self.hidden[:rows] = t3.forward_backbone(x, self.k[:, :rows], self.v[:, :rows], pos[:, None], mask)
        self.guard.record(self.k[:, :rows, :, :attend], slice(0, b), mask.lengths[::n])
        act = self.active[:b]
        self.pos[:rows] = (pos + act.repeat_interleave(n)).clamp(max=self.slot_len - 1)
        self.speech_pos[:b] += act
        self.step[:b] += act

    def _graph(self, key: tuple) -> torch.cuda.CUDAGraph:
        g = self.graphs.get(key)
        if g is None:
            # The warm-up step really runs: keep the live requests' state and put it back afterwards. Its
            # KV writes land at each row's next position, which the next real step overwrites.
            live = (self.hidden, self.pos, self.speech_pos, self.step, self.counts, self.out, self.done,
                    *self.guard.buffers())
            state = [t.clone() for t in live]

            def warmup():
                self._step(*key)
                for dst, src in zip(live, state):
                    dst.copy_(src)
            g, _ = capture(lambda: self._step(*key), self.pool, warmup)
            self.graphs[key] = g
        return g

    def size_for(self, n_slots: int) -> int:
        return next(b for b in self.sizes if b >= n_slots)

    def length_for(self, n_positions: int) -> int:
        for a in self.lengths:
            if n_positions <= a:
                return a
        raise ValueError(f"{n_positions} positions exceed the KV slot ({self.slot_len})")

    @torch.inference_mode()
    def run_step(self, b: int, attend: int, use_top_k: bool, use_top_p: bool) -> None:
        key = (b, attend, use_top_k, use_top_p)
        if not self.use_graphs:
            self._step(*key)
        elif key in self.graphs or not self.lazy:
            self._graph(key).replay()
        else:  # not captured yet: this step eagerly, the capture later, between rounds (`BackgroundWarmup`)
            if key not in self.wanted:
                self.wanted.append(key)
            self._step(*key)

    def capture(self, key: tuple) -> None:
        """Capture the graph of `key` (b, attend, use_top_k, use_top_p) now, if it is not yet."""
        if self.use_graphs:
            self._graph(key)

    def graph_keys(self, flags=((False, False),)) -> list[tuple]:
        """Every (batch size, length, *flags) graph a warm-up captures, smallest batches and lengths first."""
        return [(b, a, *f) for b in self.sizes for a in self.lengths for f in flags] if self.use_graphs else []

    def warmup(self, flags=((False, False),)) -> None:
        """Capture every (batch size, length) graph now rather than on first use."""
        for key in self.graph_keys(flags):
            self._graph(key)
