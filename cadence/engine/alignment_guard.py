"""The multilingual model's end-of-speech rules inside a decode step (`layers.alignment`), for every decoder.

A `QueryTap` in each watched layer keeps the rotated queries of its watched heads as the backbone runs; after a
forward, `record` turns the newest query of each request's conditional row and the cached keys into that row's
attention over its text; before the next draw, `decide` runs the rules on it and suppresses or forces EOS in the
CFG-combined logits (the reference's place for them: before the repetition penalty). Everything is device
tensors of fixed shape: no host copy, no Python branch on values, nothing left behind after a request, so the
step stays capturable. A model without taps gets `NoGuard`, whose methods pass everything through."""

from __future__ import annotations

import torch
from torch import nn

from ..layers import alignment_kernels
from ..layers.alignment import AlignmentState, alignment_step, apply_alignment, text_attention


class QueryTap(nn.Module):
    """Stands in for `LlamaAttention.query_tap`: passes the queries (B, H, T, D) on and keeps a reference to them as
    `queries` (the last forward's; inside a CUDA graph, the graph's own buffer), read at `heads` after the forward.
    No copy and no indexing here: an index tensor made on the host could not be captured."""

    def __init__(self, heads: list[int]):
        super().__init__()
        self.heads = list(heads)
        self.queries: torch.Tensor | None = None

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        self.queries = q
        return q


def watched_heads(heads: tuple[tuple[int, int], ...], n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """The (layer, head) pairs a T3 of this shape is watched at: the family's own, or for a small test model
    that lacks them, the same pairs taken modulo its layers and heads (so the rules run on tiny checkpoints)."""
    return [(layer % n_layers, head % n_heads) for layer, head in heads]


def attach_query_taps(t3, heads: tuple[tuple[int, int], ...]) -> None:
    """Put a `QueryTap` on the watched layers of `t3` (a module transform; no-op for no heads)."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in watched_heads(heads, t3.cfg.n_layers, t3.cfg.n_heads):
        by_layer.setdefault(layer, []).append(head)
    for layer, hs in by_layer.items():
        t3.tfmr.layers[layer].self_attn.query_tap = QueryTap(hs)


def _taps(t3) -> list[tuple[int, QueryTap]]:
    """(layer index, tap) of every tapped layer of a T3 (none for a backbone without taps, e.g. Turbo's GPT-2)."""
    layers = getattr(t3.tfmr, "layers", ())
    taps = [(i, getattr(getattr(layer, "self_attn", None), "query_tap", None)) for i, layer in enumerate(layers)]
    return [(i, tap) for i, tap in taps if isinstance(tap, QueryTap)]


class NoGuard:
    """A model without watched heads: the rules are not run."""

    def start(self, slot: int, prompt_len: int, enabled: bool) -> None:
        pass

    def record(self, k_cache, slots, lengths, query_at=None) -> None:
        pass

    def decide(self, logits: torch.Tensor, b: int) -> torch.Tensor:
        return logits

    def observe(self, token: torch.Tensor, b: int) -> None:
        pass

    def buffers(self) -> list[torch.Tensor]:
        return []


class AlignmentGuard:
    """Rule state for `slots` requests whose conditional row is row `rows_per_slot * s` of the KV cache."""

    def __init__(self, t3, slots: int, rows_per_slot: int, max_positions: int):
        self.taps = _taps(t3)
        dev = t3.device
        self.per_slot, self.text_start = rows_per_slot, t3.text_start
        self.eos, self.bos = t3.cfg.stop_speech, t3.cfg.start_speech
        self.width = max(1, max_positions - self.text_start)
        self.state = AlignmentState.zeros(slots, dev)
        self.attn = torch.zeros(slots, self.width, device=dev)  # the latest text attention of each slot
        self.text_len = torch.zeros(slots, device=dev, dtype=torch.long)
        self.enabled = torch.zeros(slots, device=dev, dtype=torch.bool)
        self.last_two = torch.full((slots, 2), -1, device=dev, dtype=torch.long)
        self.history = torch.zeros(slots, device=dev, dtype=torch.long)
        self.kernels = alignment_kernels.applies(dev, sum(len(tap.heads) for _, tap in self.taps))
        """The rules as two Triton kernels (`layers.alignment_kernels`) rather than ~50 eager ones (CUDA)."""

    @classmethod
    def build(cls, t3, slots: int, rows_per_slot: int, max_positions: int) -> "AlignmentGuard | NoGuard":
        return cls(t3, slots, rows_per_slot, max_positions) if _taps(t3) else NoGuard()

    def start(self, slot: int, prompt_len: int, enabled: bool) -> None:
        """A request enters `slot` with a prompt of `prompt_len` positions ([voice | emotion | text | start x2])."""
        self.state.reset(slot)
        self.text_len[slot] = prompt_len - self.text_start - 2
        self.enabled[slot] = bool(enabled)
        self.last_two[slot] = torch.tensor([-1, self.bos])  # the history starts with the start token
        self.history[slot] = 1

    def record(self, k_cache: torch.Tensor, slots: slice | torch.Tensor, lengths: torch.Tensor,
               query_at: torch.Tensor | None = None) -> None:
        """After a forward over the rows of `slots` (in slot order, `rows_per_slot` rows each): keep each slot's
        attention over its text. k_cache (layers, rows, H, A, D) indexed like the forward's rows; lengths (b,)
        keys each conditional row attended; query_at (b,): which query of a prefill (default: the last)."""
        queries, keys = [], []
        for layer, tap in self.taps:
            q = tap.queries[:: self.per_slot]  # (b, H, T, D): the conditional rows
            for head in tap.heads:
                qh = q[:, head]  # (b, T, D)
                queries.append(qh[:, -1] if query_at is None else qh[torch.arange(qh.shape[0], device=qh.device),
                                                                      query_at])
                keys.append(k_cache[layer][:: self.per_slot, head])  # (b, A, D)
        if self.kernels and isinstance(slots, slice):
            alignment_kernels.text_attention_into(self.attn[slots], queries, keys, lengths, self.text_start)
        else:
            self.attn[slots] = text_attention(queries, keys, lengths, self.text_start, self.width)

    def decide(self, logits: torch.Tensor, b: int) -> torch.Tensor:
        """logits (b, V) after CFG for slots [0, b) -> with EOS suppressed or forced where the rules say so."""
        if self.kernels:
            return alignment_kernels.step_and_apply(self.state.first(b), self.attn[:b], self.text_len[:b],
                                                    self.last_two[:b], self.history[:b], self.enabled[:b], logits,
                                                    self.eos)
        suppress, force = alignment_step(self.state.first(b), self.attn[:b], self.text_len[:b], self.last_two[:b],
                                         self.history[:b])
        on = self.enabled[:b]
        return apply_alignment(logits, suppress & on, force & on, self.eos)

    def observe(self, token: torch.Tensor, b: int) -> None:
        """The tokens (b,) just drawn join each slot's history."""
        self.last_two[:b, 0] = self.last_two[:b, 1]
        self.last_two[:b, 1] = token
        self.history[:b] += 1

    def buffers(self) -> list[torch.Tensor]:
        """Every state tensor a step writes (a warm-up step that really runs puts them back afterwards)."""
        st = self.state
        return [st.frame, st.position, st.complete, st.tail, st.repeat, self.attn, self.last_two, self.history]
