"""The batched half of `TTS`: the engine, requests submitted to it, several texts at once, streaming."""

from __future__ import annotations

from .engine.engine import Engine
from .engine.request import Request, RequestHandle
from .outputs import Audio
from .sampling_params import SamplingParams
from .voices.voice import Voice


class EngineAPI:
    """Mixed into `TTS`, which provides `voice_or_default` and `_engine`."""

    @property
    def engine(self) -> Engine:
        """The batched engine (continuous batching, one GPU thread), started on first use."""
        if self._engine is None:
            self._engine = Engine(self)
        return self._engine

    def submit(self, request: Request) -> RequestHandle:
        """Queue one `Request` on the batched engine; iterate the handle (sync or `async for`) for AudioChunks."""
        return self.engine.submit(request)

    def generate_many(self, texts: list[str], voice: Voice | list[Voice] | None = None, *,
                      watermark: bool | list[bool] | None = None, speech_tokens_only: bool = False,
                      speed: float | list[float] = 1.0, **knobs) -> list[Audio]:
        """Synthesize several texts together on the batched engine. `voice`, `watermark` and every knob of
        `generate` (exaggeration, cfg_weight, ..., seed) and `speed` take one value for all texts or a list with
        one value per text. A request's audio depends only on its own text, voice, knobs and seed, not on its batch-mates."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise ValueError("texts must be a list of strings")
        SamplingParams.check_names(knobs)

        def per_text(name, value):
            if isinstance(value, (list, tuple)):
                if len(value) != len(texts):
                    raise ValueError(f"{name} has {len(value)} values for {len(texts)} texts")
                return list(value)
            return [value] * len(texts)

        voices = per_text("voice", voice)
        marks = per_text("watermark", watermark)
        speeds = per_text("speed", speed)
        columns = {k: per_text(k, v) for k, v in knobs.items()}
        requests = [Request(text, self.voice_or_default(voices[i]),
                            self.params(**{k: c[i] for k, c in columns.items()}),
                            marks[i], speech_tokens_only, speed=speeds[i])
                    for i, text in enumerate(texts)]
        handles = [self.submit(r) for r in requests]
        return [h.result() for h in handles]

    def stream(self, text: str, voice: Voice | None = None, *, watermark: bool | None = None, speed: float = 1.0,
               **knobs):
        """Yield `AudioChunk`s of `text` while T3 is still decoding (same knobs as `generate`, `speed` too): a
        small first chunk, then larger ones; joins are sample-continuous. Closing the iterator early cancels the
        request."""
        voice = self.voice_or_default(voice)
        handle = self.submit(Request(text, voice, self.params(**knobs), watermark,
                                     stream=True, speed=speed))
        return _cancel_on_close(handle)

    def close(self) -> None:
        """Stop the batched engine (if started), finishing the requests it holds."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None



def _cancel_on_close(handle: RequestHandle):
    try:
        yield from handle
    finally:
        handle.cancel()
