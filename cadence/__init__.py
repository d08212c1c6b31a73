"""Cadence: a fast inference engine for Resemble AI's Chatterbox TTS."""

from __future__ import annotations

import importlib

__all__ = ["TTS", "SamplingParams", "Audio", "Voice"]
__version__ = "0.1.0"

# Imported on first use: helper processes (encoders, watermark workers) import parts of the package without
# paying for torch and the models.
_LAZY = {"TTS": ".tts", "SamplingParams": ".sampling_params", "Audio": ".outputs", "Voice": ".voices.voice"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cadence' has no attribute {name!r}")
