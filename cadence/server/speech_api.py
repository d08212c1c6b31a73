"""POST /v1/audio/speech: one request into the engine, its audio encoded off the event loop and sent as it comes."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from ..audio.encode import CONTENT_TYPES, format_unavailable
from ..engine.cpu_priority import lower_beside_gpu
from ..engine.request import Request as EngineRequest
from ..engine.request import RequestCancelled
from .errors import ApiError, documented
from .schemas import OPENAI_VOICES, SpeechRequest


def check_model(family, model: str | None) -> None:
    """404 unless `model` (None: unset) is one of the loaded family's ids; a model of another family says so."""
    from ..family import FAMILIES
    if model is None or model in family.model_ids:
        return
    other = next((f for f in FAMILIES.values() if model in f.model_ids), None)
    why = (f": it is Chatterbox {other.name}; this server runs Chatterbox {family.name} (run a second server for "
           f"the other model)" if other else " not found")
    raise ApiError(404, f"model {model!r}{why}; GET /v1/models lists this server's models", param="model",
                   code="model_not_found")


async def _first_chunk(chunks, request: Request, handle, timeout: float):
    """The first AudioChunk; a client that disconnects meanwhile cancels the request in the engine."""
    task = asyncio.ensure_future(chunks.__anext__())
    deadline = time.perf_counter() + timeout
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.1)
            if done:
                return task.result()
            if await request.is_disconnected():
                handle.cancel()
                raise RequestCancelled("the client disconnected")
            if time.perf_counter() > deadline:
                raise asyncio.TimeoutError
    finally:
        if not task.done():
            handle.cancel()
            task.cancel()


def queue_full(load: dict, max_queue: int) -> bool:
    """More requests wait than free slots can take plus `max_queue`: a newcomer would only queue behind them."""
    free = load["max_batch"] - load["running"]
    return load["waiting"] - max(free, 0) >= max_queue


def add_speech_routes(app: FastAPI, settings, ready, library, metrics, encode_pool) -> None:
    # Encoding (mp3, opus, aac, flac: FFmpeg through PyAV) runs on these threads, never on the loop: in the
    # `encode_pool`'s processes beside a GPU engine (the threads wait on their pipes), in the threads otherwise.
    # Beside a GPU engine, below its threads on the CPU (`cadence.engine.cpu_priority`): encoding never delays a
    # decode step. A pool thread starts with the first response it encodes, so the loaded engine's device is known.
    encoders = ThreadPoolExecutor(max_workers=settings.encode_workers, thread_name_prefix="cadence-encode",
                                  initializer=lambda: lower_beside_gpu(ready().device))

    def resolve_voice(t, name: str):
        lib = library()
        if name in lib:
            return lib.get(name)
        if name in ("default", *OPENAI_VOICES) and t.default_voice is not None:
            return t.default_voice
        raise ApiError(404, f"voice {name!r} not found; GET /v1/voices lists them", param="voice",
                       code="voice_not_found")

    @app.post("/v1/audio/speech", responses=documented(400, 401, 404, 413, 429, 503, 504))
    async def speech(body: SpeechRequest, request: Request):
        t = ready()
        text = body.input
        if not text.strip():
            raise ApiError(400, "input is empty", param="input")
        if len(text) > settings.max_input_chars:
            raise ApiError(400, f"input has {len(text)} characters; at most {settings.max_input_chars} per request",
                           param="input", code="input_too_long")
        check_model(t.family, body.model)
        unavailable = format_unavailable(body.response_format)
        if unavailable:
            raise ApiError(400, unavailable, param="response_format", code="format_unavailable")
        loop = asyncio.get_running_loop()
        voice = await asyncio.to_thread(resolve_voice, t, body.voice_name)
        try:
            params = t.params(**body.knobs())
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        # The queue check and the submit with no await between them: a burst cannot pass the check together.
        if queue_full(t.engine.load, settings.max_queue):
            metrics.requests.labels("rejected").inc()
            raise ApiError(429, "server busy: the request queue is full", "rate_limit_error",
                           code="queue_full", headers={"Retry-After": "2"})
        try:
            handle = t.submit(EngineRequest(text, voice, params, stream=body.stream, speed=body.speed))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        started = time.perf_counter()
        deadline = started + settings.request_timeout_s
        chunks = handle.__aiter__()
        try:  # wait for the first audio before answering, so failures still get a status code
            first = await _first_chunk(chunks, request, handle, settings.request_timeout_s)
        except asyncio.TimeoutError:
            handle.cancel()
            metrics.requests.labels("timeout").inc()
            raise ApiError(504, f"no audio within {settings.request_timeout_s} s", "server_error") from None
        except RequestCancelled as exc:
            raise ApiError(499, str(exc), "server_error") from None
        except Exception as exc:  # noqa: BLE001 - e.g. CUDA OOM inside the engine: this request fails alone
            metrics.requests.labels("error").inc()
            raise ApiError(503, f"generation failed: {type(exc).__name__}: {exc}", "server_error") from None
        metrics.ttfa.observe(time.perf_counter() - started)
        encoder = encode_pool.encoder(body.response_format, t.sample_rate)
        usage = {"input_tokens": handle.input_tokens, "output_tokens": 0}  # the engine's own tokenization

        async def audio_chunks():
            chunk, total = first, 0.0
            try:
                while not chunk.final:
                    total += chunk.samples.size / chunk.sample_rate
                    yield await loop.run_in_executor(encoders, encoder.write, chunk.samples)
                    remaining = max(0.01, deadline - time.perf_counter())
                    chunk = await asyncio.wait_for(chunks.__anext__(), remaining)
                total += chunk.samples.size / chunk.sample_rate
                usage["output_tokens"] = len(chunk.tokens)
                # the last chunk (a one-piece response's only one) and the encoder's tail in one pool task: under
                # load a separate close() queued behind other responses' encoding
                yield await loop.run_in_executor(encoders, encoder.finish, chunk.samples)
                metrics.requests.labels("ok").inc()
                metrics.latency.observe(time.perf_counter() - started)
                metrics.audio_seconds.inc(total)
            finally:  # a client that hangs up (or a timeout) cancels the request inside the engine
                handle.cancel()
                encoders.submit(encoder.discard)  # and frees its encoder's state (not awaited)

        async def raw():
            async for data in audio_chunks():
                if data:
                    yield data

        async def sse():
            async for data in audio_chunks():
                if data:
                    yield f"data: {json.dumps({'type': 'speech.audio.delta', 'audio': base64.b64encode(data).decode()})}\n\n"
            usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
            yield f"data: {json.dumps({'type': 'speech.audio.done', 'usage': usage})}\n\n"

        if body.stream_format == "sse":
            return StreamingResponse(sse(), media_type="text/event-stream")
        return StreamingResponse(raw(), media_type=CONTENT_TYPES[body.response_format])
