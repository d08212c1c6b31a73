"""Speaking rate (OpenAI's `speed`, 0.25-4): the mel spectrogram is resampled in time before the vocoder.

HiFT reads pitch and timbre from each mel frame, so a mel stretched in time gives the same voice at the same
pitch, faster or slower: no phase vocoder, no artefacts of one, nothing on the CPU. Frame j of the stretched
mel is the source mel at position j * speed, linearly interpolated between its two neighbours; a stream
stretches its frames as they come (`stretched_count` says how many are final so far) and gets the frames a
one-piece render of the same mel gets."""

from __future__ import annotations

import math

import torch

MIN_SPEED, MAX_SPEED = 0.25, 4.0


def check_speed(speed) -> float:
    """`speed` as a float in [0.25, 4]; ValueError otherwise."""
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not MIN_SPEED <= float(speed) <= MAX_SPEED:
        raise ValueError(f"speed must be a number in [{MIN_SPEED}, {MAX_SPEED}], got {speed!r}")
    return float(speed)


def stretched_count(n_source: int, speed: float, final: bool) -> int:
    """Stretched frames computable from `n_source` source frames: all of them once the source is final; before
    that only those whose right neighbour (position + 1) is already there, so later frames never change them."""
    if final:
        return max(1, round(n_source / speed)) if n_source else 0
    return math.floor((n_source - 2) / speed + 1e-9) + 1 if n_source >= 2 else 0


def stretch_mel(mel: torch.Tensor, speed: float, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Frames [start, stop) of `mel` (B, C, T) stretched to run at `speed` -> (B, C, stop - start)."""
    T = mel.shape[-1]
    stop = stretched_count(T, speed, True) if stop is None else stop
    pos = (torch.arange(start, stop, device=mel.device, dtype=torch.float64) * speed).clamp(max=T - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=T - 1)
    w = (pos - lo).to(mel.dtype)
    return mel[..., lo] * (1 - w) + mel[..., hi] * w
