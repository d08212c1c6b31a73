"""One copy of each running voice's prompt keys and values, read once for all the decode rows of that voice.

A request's first P KV positions are its voice's alone (the speaker token and the prompt speech tokens, or the
perceiver's queries): the same for every request with that voice. Turbo's prompt holds up to 376 of them, more
than half of a 300-token request's keys, and a batched decode step reads every row's keys once a step: with 64
rows of one voice, 64 copies of the same positions. This store keeps one copy per voice, with the rows that use
it, for the decode step's cascade attention (`layers.cascade_attention`): a voice's keys are read once per head
for all its rows. Each admitted row also gets the store's values copied into its own first positions, so
whichever kernel reads a row (the cascade, or SDPA on small batches and on the CPU) sees the same keys."""

from __future__ import annotations

import torch

from ..layers import decode_attention
from ..layers.decode_attention import SharedPrefix

# Voices whose prompt keys and values the batched decoder keeps once (Turbo's take 37 MB each in bf16, 24 layers x
# 376 positions), read once per voice and head in steps of 64 rows or more (cascade attention,
# `batch_t3.CASCADE_MIN_ROWS`). H100, Turbo, 64 clients: the engine 367x against 353x with every row reading its own.
SHARED_VOICES = 8
# Only where a voice's prompt is a large share of a request's keys (Turbo: up to 376 positions); the original and
# multilingual models' 33 would not pay for the cascade's extra kernel (not measured there).
MIN_POSITIONS = 128


def shared_voices(t3) -> int:
    """How many voices a batched decoder for `t3` keeps once for all their rows: SHARED_VOICES where the kernels
    that read them run (CUDA with Triton) and a voice's prompt is long enough to pay for them (MIN_POSITIONS);
    else 0, every row reading its own."""
    cuda = t3.device.type == "cuda" and decode_attention.triton is not None
    return SHARED_VOICES if cuda and t3.max_voice_positions >= MIN_POSITIONS else 0


class SharedPrompts:
    """`entries` voices' prompt keys and values (layers, entries, H, P, D), P = the backbone's longest voice
    prompt, and per KV row the entry it reads and how many positions (0: its own cache only). An entry is
    filled on a voice's first admission, held while a slot of that voice decodes, and reused least recently
    used first once free; with every entry held, a newcomer of another voice reads its own cache."""

    def __init__(self, t3, entries: int, rows: int):
        if entries < 1:
            raise ValueError(f"entries must be at least 1, got {entries}")
        c, dev, dt = t3.cfg, t3.device, t3.dtype
        self.t3, self.positions = t3, t3.max_voice_positions
        shape = (c.n_layers, entries, c.n_heads, self.positions, c.head_dim)
        self.k = torch.zeros(shape, device=dev, dtype=dt)
        self.v = torch.zeros(shape, device=dev, dtype=dt)
        self.row_entry = torch.zeros(rows, device=dev, dtype=torch.int32)
        self.row_len = torch.zeros(rows, device=dev, dtype=torch.int32)
        self.members = torch.zeros(entries, rows, device=dev, dtype=torch.int32)  # each entry's rows, then unused
        self.counts = torch.zeros(entries, device=dev, dtype=torch.int32)
        self.entry_len = torch.zeros(entries, device=dev, dtype=torch.int32)
        self.rows_of: list[list[int]] = [[] for _ in range(entries)]
        self.voices: list[str | None] = [None] * entries  # the voice key each entry holds
        self.used = [0] * entries  # when each entry was last attached (a counter): the oldest free one goes first
        self.clock = 0
        self.of_slot: dict[int, int] = {}  # the entry each decoding slot holds

    @property
    def users(self) -> list[int]:
        """Slots decoding with each entry."""
        return [sum(1 for e in self.of_slot.values() if e == entry) for entry in range(len(self.voices))]

    def for_rows(self, rows: int) -> SharedPrefix:
        """What a decode step over the first `rows` KV rows passes to the kernel (static buffers: graphs replay
        with whatever the rows hold then)."""
        return SharedPrefix(self.k, self.v, self.row_entry[:rows], self.row_len[:rows], self.members, self.counts,
                            self.entry_len)

    @torch.inference_mode()
    def attach(self, slot: int, rows: slice, voice: tuple[str, torch.Tensor], k_cache: torch.Tensor,
               v_cache: torch.Tensor) -> bool:
        """Rows `rows` (one slot's) of the caches (layers, rows, H, S, D), already prefilled, now hold `voice`'s
        (key, prompt embeddings (1, P, C)) keys and values from the store and read them there. -> whether an
        entry was free (if not, the rows keep their own prefill's keys)."""
        self.detach(slot, rows)  # a slot admitted again (a padded prefill retried alone) holds one entry at most
        key, embeds = voice
        P = embeds.shape[1]
        entry = self._entry_for(key, embeds) if P <= self.positions else None
        if entry is None:
            return False
        self.of_slot[slot] = entry
        k_cache[:, rows, :, :P] = self.k[:, entry: entry + 1, :, :P]  # broadcast over a CFG pair's rows
        v_cache[:, rows, :, :P] = self.v[:, entry: entry + 1, :, :P]
        self.row_entry[rows] = entry
        self.row_len[rows] = P
        self.rows_of[entry] += range(rows.start, rows.stop)
        self._publish(entry)
        return True

    def detach(self, slot: int, rows: slice) -> None:
        """The slot is freed: its rows read their own cache, and its entry is one user lighter."""
        entry = self.of_slot.pop(slot, None)
        if entry is not None:
            self.row_len[rows] = 0
            self.rows_of[entry] = [r for r in self.rows_of[entry] if not rows.start <= r < rows.stop]
            self._publish(entry)

    def _publish(self, entry: int) -> None:
        """The entry's member rows where the cascade kernel reads them (between steps)."""
        rows = self.rows_of[entry]
        if rows:
            self.members[entry, : len(rows)] = torch.tensor(rows, dtype=torch.int32).to(self.members.device)
        self.counts[entry] = len(rows)

    def _entry_for(self, key: str, embeds: torch.Tensor) -> int | None:
        self.clock += 1
        if key in self.voices:
            entry = self.voices.index(key)
        else:
            held = set(self.of_slot.values())
            free = [e for e in range(len(self.voices)) if e not in held]
            if not free:
                return None
            entry = min(free, key=lambda e: self.used[e])
            P = embeds.shape[1]
            store_k, store_v = self.k[:, entry: entry + 1], self.v[:, entry: entry + 1]
            self.t3.forward_backbone(embeds.to(self.k.dtype), store_k, store_v,
                                     torch.arange(P, device=self.k.device), None)
            self.voices[entry] = key
            self.entry_len[entry] = P
        self.used[entry] = self.clock
        return entry
