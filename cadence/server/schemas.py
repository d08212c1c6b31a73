"""Request bodies of the speech API: OpenAI's fields plus Chatterbox's knobs under their own names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..sampling_params import TOP_K_MAX, SamplingParams


class VoiceRef(BaseModel):
    id: str = Field(..., description="a voice name, as the string form takes it")


class SpeechRequest(BaseModel):
    model: str | None = Field(None, description="one of GET /v1/models (they all name the loaded checkpoint); "
                                              "unset: the loaded model")
    input: str = Field(..., description="the text to speak")
    voice: str | VoiceRef = Field("default", description="a library voice name, or {\"id\": name} (the OpenAI "
                                                        "client's custom-voice form); 'default' (or an OpenAI voice "
                                                        "name such as 'alloy' when no library voice has it) is the "
                                                        "checkpoint's voice")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0, description="speaking rate, 0.25-4 (pitch kept: the mel is "
                                                            "stretched in time before the vocoder)")
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
    top_k: int | None = Field(None, ge=0, le=TOP_K_MAX)
    repetition_penalty: float | None = Field(None, ge=1.0, le=5.0)
    max_new_tokens: int | None = Field(None, ge=1, le=4000, description="unset: 1000, or the loaded model's "
                                                                       "limit when that is lower")
    seed: int | None = Field(None, ge=0, lt=2 ** 63)
    language: str | None = Field(None, max_length=8, description="the text's language id, e.g. 'fr' (GET "
                                                                 "/v1/languages); the multilingual model needs one")
    alignment_stop: bool | None = Field(None, description="multilingual model: end-of-speech rules that watch the "
                                                          "attention (unset: on); false lets the model alone decide "
                                                          "when to stop")

    @property
    def voice_name(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id

    def knobs(self) -> dict:
        """The request's sampling knobs (None: unset), for `TTS.params`: the loaded family's defaults fill the
        unset ones, an unset max_new_tokens within the model's limit."""
        return {k: getattr(self, k) for k in SamplingParams.names()}


OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                           "verse", "marin", "cedar"})
