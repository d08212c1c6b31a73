"""Cadence: a fast inference engine for Resemble AI's Chatterbox TTS."""

from .outputs import Audio
from .sampling_params import SamplingParams
from .tts import TTS
from .voices.voice import Voice

__all__ = ["TTS", "SamplingParams", "Audio", "Voice"]
__version__ = "0.1.0"
