"""T3 decoding: a preallocated KV cache, prefill, then a fixed-shape decode step that samples on the device.

The step reads only device tensors (token, positions, sampling knobs, count buffer, noise buffer), so it can
be captured in a CUDA graph; the host learns about EOS only every `eos_check_every` steps."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layers.race_noise import race_noise
from ..layers.sampling import cfg_combine, process_logits, sample
from ..models.t3 import T3
from ..sampling_params import SamplingParams
from .alignment_guard import AlignmentGuard
from .shapes import round_up


@dataclass
class T3Result:
    tokens: list[int]
    """Sampled speech tokens, EOS included if it was sampled."""
    logits: list[torch.Tensor] | None = None
    """Per step raw logits (rows, V) when asked for (teacher-forcing parity)."""
    guided: list[torch.Tensor] | None = None
    """Per step CFG-combined logits (1, V) after the end-of-speech rules, beside `logits`."""
    prefill_len: int = 0


class KVCache:
    def __init__(self, t3: T3, rows: int, length: int, device, dtype):
        c = t3.cfg
        shape = (c.n_layers, rows, c.n_heads, length, c.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.rows, self.length = rows, length


class T3Runner:
    def __init__(self, t3: T3, eos_check_every: int = 8, use_graphs: bool = False):
        self.t3 = t3
        self.eos_check_every = eos_check_every
        self.use_graphs = use_graphs
        self.cache: KVCache | None = None
        self.decoders: list = []  # CUDA-graph decoders, smallest cache first

    def release(self) -> None:
        """Drop the KV caches and decode graphs (sequential offload frees the GPU between stages; its graphs
        point at weights that are about to leave)."""
        had_graphs = bool(self.decoders)
        for d in self.decoders:
            d.close()
        self.cache = None
        self.decoders = []
        if had_graphs:  # a released graph's memory pool stays reserved until the cache is emptied (2 MB a lease)
            torch.cuda.empty_cache()

    def graph_decoder(self, rows: int, length: int):
        """A captured decoder whose KV cache holds `length` positions (rounded up to 128); kept for reuse. One
        per row count: a longer request replaces it (its length buckets serve the shorter ones too), so a
        smaller cache is never kept beside a larger one."""
        from .t3_graph import T3GraphDecoder
        for d in self.decoders:
            if d.rows == rows and d.max_len >= length:
                return d
        smaller = [d for d in self.decoders if d.rows == rows]
        for d in smaller:
            d.close()
            self.decoders.remove(d)
        if smaller:  # its graphs' pool stays reserved until the allocator's cache is emptied
            torch.cuda.empty_cache()
        max_len = round_up(length, 128)
        d = T3GraphDecoder(self.t3, rows, max_len, max_steps=max_len)
        self.decoders = sorted(self.decoders + [d], key=lambda x: x.max_len)
        return d

    @property
    def device(self):
        return self.t3.device

    @property
    def dtype(self):
        return self.t3.dtype

    def _cache_for(self, rows: int, length: int) -> KVCache:
        if self.cache is None or self.cache.rows != rows or self.cache.length < length:
            self.cache = None  # free before allocating the larger one
            self.cache = KVCache(self.t3, rows, max(length, 512), self.device, self.dtype)
        return self.cache

    @torch.inference_mode()
    def voice_prefix(self, voice_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """voice_embeds (1, P, C), the first P prompt positions of every request with this voice -> their keys
        and values (layers, 1, H, P, D) each. Under causal attention they depend on those positions alone, so a
        request's prefill can start from them (`generate(prefix=...)`) instead of recomputing them."""
        P = voice_embeds.shape[1]
        cache = KVCache(self.t3, 1, P, self.device, self.dtype)
        self.t3.forward_backbone(voice_embeds.to(self.dtype), cache.k, cache.v, torch.arange(P, device=self.device),
                                 None)
        return cache.k, cache.v

    @torch.inference_mode()
    def generate(self, prefill: torch.Tensor, params: SamplingParams, seed: int,
                 forced_tokens: list[int] | None = None, keep_logits: bool = False,
                 speech_only: bool = False, prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> T3Result:
        """prefill (rows, L, C): rows = 2 for a CFG pair. The sampling noise of step i is a function of (seed, i)
        alone (`layers.race_noise`), as in the batched engine. With `forced_tokens` the given tokens are fed
        instead of sampled ones (teacher forcing) and generation runs exactly that many steps. `speech_only`
        masks ids that are neither speech tokens nor EOS. `prefix`: the keys and values of prefill's first
        positions (`voice_prefix`), copied into the cache instead of recomputed on the eager path (the graph
        decoder's prefill is on the GPU and recomputes them)."""
        if self.use_graphs and forced_tokens is None and not keep_logits:
            rows, L, _ = prefill.shape
            dec = self.graph_decoder(rows, L + params.max_new_tokens)
            tokens = dec.generate(prefill, params, seed, params.max_new_tokens, self.eos_check_every, speech_only)
            return T3Result(tokens=tokens, prefill_len=L)
        t3, dev = self.t3, self.device
        cfg = t3.cfg
        rows, L, _ = prefill.shape
        steps = len(forced_tokens) if forced_tokens is not None else params.max_new_tokens
        cache = self._cache_for(rows, L + steps + 1)
        V = cfg.speech_vocab

        def knob(v, dtype=torch.float32):
            return torch.tensor([v], device=dev, dtype=dtype)

        cfg_w, rep, temp = knob(params.cfg_weight), knob(params.repetition_penalty), knob(params.temperature)
        min_p, top_p, top_k = knob(params.min_p), knob(params.top_p), knob(params.top_k, torch.long)
        counts = torch.zeros(1, V, device=dev, dtype=torch.int32)
        counts[0, cfg.start_speech] = 1  # the reference's history starts with the start token
        seeds = torch.tensor([seed], device=dev, dtype=torch.long)
        out = torch.full((steps,), -1, device=dev, dtype=torch.long)
        forced = torch.tensor(forced_tokens, device=dev, dtype=torch.long) if forced_tokens is not None else None
        logits_log = [] if keep_logits else None
        guided_log = [] if keep_logits else None
        allowed = torch.ones(V, device=dev, dtype=torch.bool)
        allowed[cfg.start_speech:] = False
        allowed[cfg.stop_speech] = True

        hidden = prefill_rows(t3, prefill.to(self.dtype), cache.k, cache.v, prefix)
        guard = AlignmentGuard.build(t3, 1, rows, cache.length)
        guard.record(cache.k[..., :L, :], slice(0, 1), torch.tensor([L], device=dev))
        guard.start(0, L, params.alignment_stop is not False)
        pos = torch.tensor([L], device=dev)
        speech_pos = torch.tensor([1], device=dev)
        done = torch.zeros((), device=dev, dtype=torch.bool)
        n = 0
        for i in range(steps):
            logits = t3.speech_logits(hidden)
            if speech_only:
                logits = logits.float().masked_fill(~allowed, float("-inf"))
            if keep_logits:
                logits_log.append(logits.float().cpu())
            guided = guard.decide(cfg_combine(logits[:1], logits[1:2] if rows == 2 else None, cfg_w), 1)
            if keep_logits:
                guided_log.append(guided.cpu())
            probs = process_logits(guided, None, counts, cfg_w, rep, temp, min_p, top_p, top_k,
                                   penalty_last=t3.penalty_last)
            noise = race_noise(seeds, torch.full((1,), i, device=dev, dtype=torch.long), V)
            token = sample(probs, noise) if forced is None else forced[i:i + 1]
            guard.observe(token, 1)
            out[i:i + 1] = token
            counts.scatter_add_(1, token[:, None], torch.ones_like(token[:, None], dtype=torch.int32))
            if i == 0 and not t3.start_in_history:  # later steps' penalty sees only the generated tokens
                counts[0, cfg.start_speech] -= 1
            n = i + 1
            if forced is None:
                done |= (token == cfg.stop_speech).squeeze(0)
                if (i + 1) % self.eos_check_every == 0 and bool(done):
                    break
            if i + 1 == steps:
                break
            x = t3.speech_step_embed(token, speech_pos).to(self.dtype)[:, None].expand(rows, 1, -1)
            attend = int(L + i + 1)
            mask = torch.ones(1, attend, device=dev, dtype=torch.bool)
            hidden = t3.forward_backbone(x, cache.k[:, :, :, :attend], cache.v[:, :, :, :attend], pos, mask)
            guard.record(cache.k[..., :attend, :], slice(0, 1), torch.tensor([attend], device=dev))
            pos += 1
            speech_pos += 1
        tokens = out[:n].tolist()
        if forced is None and cfg.stop_speech in tokens:
            tokens = tokens[: tokens.index(cfg.stop_speech) + 1]
        return T3Result(tokens=tokens, logits=logits_log, guided=guided_log, prefill_len=L)


def prefill_rows(t3, prefill: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 prefix: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Run a prompt (rows, L, C) into the caches (layers, rows, H, S, D) -> the last position's hidden state
    (rows, C). With `prefix` (keys and values (layers, 1, H, P, D) of the first P positions, the voice's: the
    same in both CFG rows) those are copied in and only the other L - P positions run."""
    L, dev = prefill.shape[1], prefill.device
    if prefix is None or prefix[0].shape[-2] >= L:
        return t3.forward_backbone(prefill, k_cache, v_cache, torch.arange(L, device=dev), None)
    P = prefix[0].shape[-2]
    k_cache[:, :, :, :P].copy_(prefix[0])  # broadcast over the rows
    v_cache[:, :, :, :P].copy_(prefix[1])
    return t3.forward_backbone(prefill[:, P:], k_cache, v_cache, torch.arange(P, L, device=dev),
                               _causal_from(P, L, dev))


def _causal_from(start: int, length: int, device) -> torch.Tensor:
    """(length - start, length) bool: query start + i sees keys 0 .. start + i."""
    return torch.ones(length - start, length, device=device, dtype=torch.bool).tril(start)


def clean_speech_tokens(tokens: list[int], start: int = 6561, stop: int = 6562, vocab: int = 6561) -> list[int]:
    """What S3Gen may see: after the first start token, before the first stop token, in-vocabulary only."""
    if start in tokens:
        tokens = tokens[tokens.index(start) + 1:]
    if stop in tokens:
        tokens = tokens[: tokens.index(stop)]
    return [t for t in tokens if t < vocab]
