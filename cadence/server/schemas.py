"""Request bodies of the speech API: OpenAI's fields plus Chatterbox's knobs under their own names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..sampling_params import SamplingParams


class SpeechRequest(BaseModel):
    model: str | None = Field(None, description="one of GET /v1/models (they all name the loaded checkpoint); "
                                              "unset: the loaded model")
    input: str = Field(..., description="the text to speak")
    voice: str = Field("default", description="a library voice name; 'default' (or an OpenAI voice name such as "
                                              "'alloy' when no library voice has it) is the checkpoint's voice")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, description="only 1.0 is supported")
    stream_format: Literal["audio", "sse"] = "audio"
    stream: bool = Field(True, description="send audio while the model is still generating (first audio in a "
                                           "fraction of a second); false renders it in one piece, batched with "
                                           "other requests (higher throughput under load)")
    # Knobs left unset take the loaded model family's defaults (SamplingParams.for_family); one the family's
    # model lacks (Turbo: exaggeration, cfg_weight, min_p) is refused when set.
    exaggeration: float | None = Field(None, ge=0.0, le=2.0)
    cfg_weight: float | None = Field(None, ge=0.0, le=5.0)
    temperature: float | None = Field(None, gt=0.0, le=5.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, lt=1.0)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, ge=1.0, le=5.0)
    max_new_tokens: int = Field(1000, ge=1, le=4000)
    seed: int | None = Field(None, ge=0, lt=2 ** 63)

    def sampling_params(self, family) -> SamplingParams:
        """The request's knobs over `family`'s defaults."""
        return SamplingParams.for_family(family, **{k: getattr(self, k) for k in SamplingParams.names()})


OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                           "verse"})
