"""Whether a stream keeps ahead of its playback, from a machine's pace: the seconds T3 takes per speech token and
what rendering a window costs (a fixed part, its context, whatever the window's size, plus a part per new token).
From those, `simulate` says when each window's audio arrives and whether playback, started at the first chunk,
ever runs dry; `recommend` picks the window ladder (`EngineConfig.stream_windows`) with the earliest first audio
that plays without a gap, or, on a machine slower than real time, says how far behind a stream falls.

The model is serial, the conservative case on a CPU: T3's decode and S3Gen's windows share the same cores, so a
window's audio arrives after its tokens are decoded and then rendered. (On a GPU they overlap, and streams come
earlier than this predicts.)"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import window_tokens

AUDIO_S_PER_TOKEN = 0.04  # 25 speech tokens a second
# Window sizes the recommendation tries (tokens): multiples of the engine's decode round (`eos_check_every`, 16),
# since a window is handed over between rounds.
CHOICES = (16, 32, 48, 64, 96, 128, 192, 240)


@dataclass(frozen=True)
class Pace:
    """A machine's measured pace for one model and plan (seconds)."""
    prefill_s: float
    """From the request to T3's first token."""
    token_s: float
    """T3's decode, per speech token."""
    window_fixed_s: float
    """A window's render cost whatever its size: the flow over its context (voice prompt, audio already sent)."""
    window_token_s: float
    """A window's render cost per new token: its flow frames and vocoder samples."""

    def __post_init__(self):
        for name in ("prefill_s", "token_s", "window_fixed_s", "window_token_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")

    def window_s(self, tokens: int) -> float:
        return self.window_fixed_s + tokens * self.window_token_s

    @property
    def realtime_factor(self) -> float:
        """Seconds of work per second of audio in the limit of large windows: below 1 a stream can keep ahead."""
        return (self.token_s + self.window_token_s) / AUDIO_S_PER_TOKEN


@dataclass(frozen=True)
class Playback:
    ladder: tuple[int, ...]
    arrivals_s: tuple[float, ...]
    """When each window's audio arrives, from the request."""
    first_audio_s: float
    underruns: int
    """Windows that arrived after the audio before them had played out (playback started at the first chunk)."""
    silence_s: float
    """Seconds the listener waited in all, after playback started."""

    @property
    def gapless(self) -> bool:
        return self.underruns == 0


def windows_of(ladder: tuple[int, ...], stream_tokens: int) -> list[int]:
    """The window sizes a stream of `stream_tokens` gets: the ladder in turn, its last size repeated, the final
    window what is left."""
    sizes, left = [], stream_tokens
    while left > 0:
        n = min(window_tokens(ladder, len(sizes)), left)
        sizes.append(n)
        left -= n
    return sizes


def simulate(ladder: tuple[int, ...], pace: Pace, stream_tokens: int) -> Playback:
    """Window arrivals and playback for a stream of `stream_tokens` speech tokens under `pace`."""
    t, audio_end, arrivals, underruns, silence = pace.prefill_s, None, [], 0, 0.0
    for n in windows_of(ladder, stream_tokens):
        t += n * pace.token_s + pace.window_s(n)
        arrivals.append(t)
        if audio_end is None:  # playback starts with the first chunk
            audio_end = t
        elif t > audio_end + 1e-9:  # the listener ran out of audio: silence until this window arrives
            underruns += 1
            silence += t - audio_end
            audio_end = t
        audio_end += n * AUDIO_S_PER_TOKEN
    return Playback(tuple(ladder), tuple(arrivals), arrivals[0] if arrivals else 0.0, underruns, silence)


def candidate_ladders(choices: tuple[int, ...] = CHOICES) -> list[tuple[int, ...]]:
    """A first window, then either one steady size or a doubling ramp up to it."""
    out = []
    for first in choices:
        for steady in choices:
            if steady < first:
                continue
            out.append((first, steady))
            ramp, n = [first], first
            while 2 * n < steady:
                n *= 2
                ramp.append(n)
            if len(ramp) > 1:
                out.append((*ramp, steady))
    return out


def recommend(pace: Pace, stream_s: float = 30.0) -> Playback:
    """The ladder with the earliest first audio that plays a `stream_s` stream without a gap (ties: the smaller
    largest window, then the fewer windows); on a machine where none does, the one with the least silence."""
    tokens = max(1, round(stream_s / AUDIO_S_PER_TOKEN))
    runs = [simulate(ladder, pace, tokens) for ladder in candidate_ladders()]
    gapless = [p for p in runs if p.gapless]
    if gapless:
        return min(gapless, key=lambda p: (round(p.first_audio_s, 6), max(p.ladder), len(p.ladder)))
    return min(runs, key=lambda p: (round(p.silence_s, 6), p.first_audio_s))
