"""The engine's bookkeeping: counters, and what it holds for each request it serves."""

from __future__ import annotations

from dataclasses import dataclass, field

from .request import RequestHandle
from .rng import RequestRNG
from .streaming import StreamState


@dataclass
class EngineStats:
    """Counters since start (read by `cadence bench --concurrency`)."""
    decode_steps: int = 0
    slot_steps: int = 0
    """Sum over decode steps of the requests running in that step."""
    capacity_steps: int = 0
    """Sum over decode steps of the batch size the step ran at (ladder size)."""
    t3_s: float = 0.0
    s3gen_s: float = 0.0
    prefill_s: float = 0.0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0


@dataclass
class _Running:
    handle: RequestHandle
    text_ids: list[int]
    rng: RequestRNG | None = None
    slot: int = -1
    prefill_len: int = 0
    steps: int = 0
    tokens: list[int] = field(default_factory=list)
    t_admit: float = 0.0
    t_t3_done: float = 0.0
    stream: StreamState | None = None
    """Set for a streaming request: its S3Gen/vocoder state across windows."""
    chunks: int = 0
    t_first_audio: float = 0.0
    windows: int = 0
    """Streaming: windows handed to the audio worker so far."""
    window_steps: int = 0
    """Streaming: decode steps done when the last window was handed over."""
    lane: int | None = None
    """The postprocess lane its chunks go through (in order), set at its first chunk."""
    failed: bool = False
    """Failed (its caller has the error): the engine frees its slot and nothing more is rendered or sent."""
