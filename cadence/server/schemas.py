"""Request bodies of the speech API: OpenAI's fields plus Chatterbox's knobs under their own names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..sampling_params import SamplingParams


class SpeechRequest(BaseModel):
    model: str = Field("chatterbox", description="any of GET /v1/models; all name the loaded checkpoint")
    input: str = Field(..., description="the text to speak")
    voice: str = Field("default", description="a library voice name; 'default' (or an OpenAI voice name such as "
                                              "'alloy' when no library voice has it) is the checkpoint's voice")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, description="only 1.0 is supported")
    stream_format: Literal["audio", "sse"] = "audio"
    stream: bool = Field(True, description="send audio while the model is still generating (first audio in a "
                                           "fraction of a second); false renders it in one piece, batched with "
                                           "other requests (higher throughput under load)")
    exaggeration: float | None = Field(None, ge=0.0, le=2.0)
    cfg_weight: float = Field(0.5, ge=0.0, le=5.0)
    temperature: float = Field(0.8, gt=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    min_p: float = Field(0.05, ge=0.0, lt=1.0)
    top_k: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.2, ge=1.0, le=5.0)
    max_new_tokens: int = Field(1000, ge=1, le=4000)
    seed: int | None = Field(None, ge=0, lt=2 ** 63)

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(**{k: getattr(self, k) for k in SamplingParams.names()})


OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                           "verse"})
