"""Engine-wide settings, fixed at load time."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of float32, bfloat16, float16") from None


@dataclass(slots=True)
class EngineConfig:
    device: str = "auto"
    """cpu, cuda, cuda:N, mps or auto (CUDA if present, else MPS, else CPU)."""
    dtype: str = "auto"
    """Weight precision of T3 and the flow model (encoder + CFM estimator): float32, bfloat16, float16, or
    auto (bfloat16 on CUDA, float32 elsewhere). Weights are really cast; nothing runs under autocast."""
    vocoder_dtype: str = "float32"
    """Weight precision of the HiFT vocoder; float32 by default (its F0/source path is phase-sensitive)."""
    prepare_device: str = "auto"
    """Where the voice-preparation encoders (S3 tokenizer, CAMPPlus, VoiceEncoder) run: auto (on a GPU, kept
    in pinned CPU memory and lent to the GPU only while a voice is prepared; on CPU, the CPU), cpu, or a
    device name to keep them resident there. Generation never needs them."""
    enforce_eager: bool = False
    """Disable CUDA graphs (T3 decode, CFM solve): the plain path, for debugging and parity."""
    voice_cache_mb: int = 256
    """Device memory for resident prepared voices (LRU by bytes); ~230 KB each at full size."""
    compile: bool = False
    """torch.compile the T3 decoder layers (dynamic attention length) before the decode graphs are captured:
    about 20% faster decoding for a one-time compile of ~20 s on a cold cache."""
    eos_check_every: int = 16
    """How many decode steps run between host checks for end-of-speech."""

    def __post_init__(self):
        if self.dtype != "auto":
            parse_dtype(self.dtype)
        parse_dtype(self.vocoder_dtype)
        if not isinstance(self.voice_cache_mb, int) or self.voice_cache_mb < 1:
            raise ValueError(f"voice_cache_mb must be a positive integer, got {self.voice_cache_mb!r}")
        if not isinstance(self.eos_check_every, int) or not 1 <= self.eos_check_every <= 256:
            raise ValueError(f"eos_check_every must be an integer in [1, 256], got {self.eos_check_every!r}")

    def model_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return parse_dtype(self.dtype)

    @classmethod
    def from_kwargs(cls, **kwargs) -> "EngineConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(kwargs) - names
        if unknown:
            raise ValueError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
        return cls(**kwargs)
