"""What generation returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Audio:
    samples: np.ndarray
    """Mono float32 waveform in [-1, 1]."""
    sample_rate: int
    """Samples per second (24000)."""
    tokens: list[int] = field(default_factory=list)
    """Speech tokens S3Gen rendered (after dropping start/stop and out-of-vocabulary ids)."""
    watermarked: bool = False
    """Whether the Perth watermark was applied."""
    timings: dict = field(default_factory=dict)
    """Seconds per stage: t3, s3gen, watermark, total; and t3_tokens_per_s."""

    @property
    def duration(self) -> float:
        return self.samples.shape[-1] / self.sample_rate

    @property
    def rtf(self) -> float:
        """Wall time over audio time (lower is faster; < 1 is faster than real time)."""
        return self.timings.get("total", 0.0) / max(self.duration, 1e-9)
