"""Device residency of prepared voices: a bounded LRU (by bytes) of device copies and their T3 conditioning,
so switching between cached voices costs no GPU work and thousands of stored voices never fill VRAM."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .voice import Voice


def voice_key(voice: Voice) -> str:
    """Content hash of a voice's tensors (computed once per Voice object)."""
    key = voice._cache.get("key")
    if key is None:
        h = hashlib.sha1()
        for name, t in voice.tensors().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        key = voice._cache["key"] = h.hexdigest()
    return key


@dataclass
class Resident:
    voice: Voice
    """The voice's tensors on the device."""
    t3_embeds: dict = field(default_factory=dict)
    """dtype -> T3 speaker + perceiver conditioning (1, 1 + Q, C), computed on first use."""
    t3_prefix: dict = field(default_factory=dict)
    """dtype -> the keys and values of T3's prompt positions that are the voice's alone, (layers, 1, H, P, D)
    each (`T3Runner.voice_prefix`), computed on first use by the paths that take them."""

    @property
    def nbytes(self) -> int:
        tensors = [*self.t3_embeds.values(), *(t for kv in self.t3_prefix.values() for t in kv)]
        return self.voice.nbytes + sum(t.numel() * t.element_size() for t in tensors)


class VoiceCache:
    def __init__(self, device: torch.device, max_bytes: int = 256 << 20):
        self.device = device
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Resident] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, voice: Voice) -> Resident:
        key = voice_key(voice)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        resident = Resident(voice.to(self.device))
        with self._lock:
            self._entries[key] = resident
            self._evict()
        return resident

    def grown(self) -> None:
        """A resident gained derived tensors (T3 conditioning, prefix KV): evict the oldest others past the bound."""
        with self._lock:
            self._evict()

    def _evict(self) -> None:
        while len(self._entries) > 1 and self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
