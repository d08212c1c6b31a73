"""The FastAPI app, built by `create_app(settings)`: a thin layer over `TTS`, its batched engine and its voice
library. The model loads in the background; /health says starting / ready / error meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import base64
import json
import threading
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..audio.encode import CONTENT_TYPES, StreamEncoder
from ..engine.request import Request as EngineRequest
from ..engine.request import RequestCancelled
from .errors import ApiError, error_body
from .metrics import Metrics
from .schemas import OPENAI_VOICES, SpeechRequest
from .settings import ServerSettings



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


class _Guard:
    """Body-size limit and bearer auth as a plain ASGI middleware (Starlette's BaseHTTPMiddleware would hide
    client disconnects from the handlers, and a disconnect must cancel the request)."""

    def __init__(self, app, settings: ServerSettings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            length = headers.get("content-length", "")
            limit = self.settings.max_body_mb * 2 ** 20
            if length.isdigit() and int(length) > limit:
                return await JSONResponse(error_body(f"request body of {int(length)} bytes exceeds the "
                                                     f"{self.settings.max_body_mb} MB limit", "invalid_request_error",
                                                     code="body_too_large"), 413)(scope, receive, send)
            key = self.settings.api_key
            if key and scope["path"].startswith("/v1/") and headers.get("authorization", "") != f"Bearer {key}":
                return await JSONResponse(error_body("missing or wrong API key (Authorization: Bearer …)",
                                                     "authentication_error", code="invalid_api_key"),
                                          401)(scope, receive, send)
        await self.app(scope, receive, send)


class _State:
    def __init__(self):
        self.status, self.error, self.tts, self.library = "starting", None, None, None


def create_app(settings: ServerSettings, tts=None) -> FastAPI:
    """`tts`: an already loaded `TTS` (tests, embedding); otherwise `settings.model` loads in the background."""
    state, metrics = _State(), Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(_):
        if tts is not None:
            load()
        else:
            threading.Thread(target=load, name="cadence-load", daemon=True).start()
        yield
        if state.tts is not None:
            await asyncio.to_thread(state.tts.close)  # graceful: requests already running finish

    app = FastAPI(title="Cadence", version="0.1.0", description="OpenAI-compatible speech API for Chatterbox",
                  lifespan=lifespan)
    app.state.cadence = state
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])

    def load():
        try:
            from ..tts import TTS
            state.tts = tts or TTS.from_dir(settings.model, device=settings.device, watermark=settings.watermark,
                                            memory_plan=settings.memory_plan,
                                            stream_prompt_s=settings.stream_prompt_s,
                                            stream_history_s=settings.stream_history_s,
                                            first_audio_priority=settings.first_audio_priority,
                                            overlap_audio=settings.overlap_audio, compile=settings.compile)
            # One library object for the app's life (its lock file and re-preparation are per instance).
            state.library = state.tts.library(settings.library) if settings.library else state.tts.library()
            if settings.warmup:  # start the GPU thread and capture its graphs now, not on the first requests
                state.tts.engine.warmup()
            state.status = "ready"
        except Exception as exc:  # noqa: BLE001 - reported by /health
            state.status, state.error = "error", f"{type(exc).__name__}: {exc}"

    app.add_middleware(_Guard, settings=settings)

    @app.exception_handler(ApiError)
    async def _api_error(_, exc: ApiError):
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(f"{param or 'body'}: {first.get('msg', 'invalid request')}",
                                       "invalid_request_error", param), 400)

    @app.exception_handler(ValueError)
    async def _value(_, exc: ValueError):  # the library's and SamplingParams' validation
        return JSONResponse(error_body(str(exc), "invalid_request_error"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), exc.status_code)

    def ready():
        if state.status != "ready":
            raise ApiError(503, f"model is {state.status}" + (f": {state.error}" if state.error else ""),
                           "server_error", headers={"Retry-After": "5"})
        return state.tts

    # --- health, metrics, models ------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        body = {"status": state.status, "model": settings.model}
        if state.error:
            body["error"] = state.error
        if state.tts is not None and state.status == "ready":
            body.update(device=str(state.tts.device), plan=state.tts.plan.name, **state.tts.engine.load)
        return JSONResponse(body, 200 if state.status != "error" else 503)

    @app.get("/metrics")
    async def prometheus():
        eng = state.tts.engine if state.status == "ready" else None
        return Response(metrics.render(eng), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        ids = ready().family.model_ids
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "cadence"}
                                           for m in ids]}

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return (Path(__file__).parent / "static" / "index.html").read_text()

    # --- voices -----------------------------------------------------------------------------------------
    def library():
        ready()
        return state.library

    from .voices_api import add_voice_routes
    add_voice_routes(app, settings, ready, library)

    def resolve_voice(t, name: str):
        lib = state.library
        if name in lib:
            return lib.get(name)
        if name in ("default", *OPENAI_VOICES) and t.default_voice is not None:
            return t.default_voice
        raise ApiError(404, f"voice {name!r} not found; GET /v1/voices lists them", param="voice",
                       code="voice_not_found")

    # --- speech -----------------------------------------------------------------------------------------
    @app.post("/v1/audio/speech")
    async def speech(body: SpeechRequest, request: Request):
        t = ready()
        text = body.input
        if not text.strip():
            raise ApiError(400, "input is empty", param="input")
        if len(text) > settings.max_input_chars:
            raise ApiError(400, f"input has {len(text)} characters; at most {settings.max_input_chars} per request",
                           param="input", code="input_too_long")
        if body.speed != 1.0:
            raise ApiError(400, f"speed {body.speed} is not supported (only 1.0)", param="speed")
        check_model(t.family, body.model)
        if t.engine.load["waiting"] >= settings.max_queue:
            metrics.requests.labels("rejected").inc()
            raise ApiError(429, "server busy: the request queue is full", "rate_limit_error",
                           code="queue_full", headers={"Retry-After": "2"})
        voice = await asyncio.to_thread(resolve_voice, t, body.voice)
        try:
            handle = t.submit(EngineRequest(text, voice, body.sampling_params(t.family), stream=body.stream))
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
        encoder = StreamEncoder(body.response_format, t.sample_rate)

        async def audio_chunks():
            chunk, total = first, 0.0
            try:
                while True:
                    total += chunk.samples.size / chunk.sample_rate
                    yield chunk, encoder.write(chunk.samples)
                    if chunk.final:
                        break
                    remaining = max(0.01, deadline - time.perf_counter())
                    chunk = await asyncio.wait_for(chunks.__anext__(), remaining)
                yield None, encoder.close()
                metrics.requests.labels("ok").inc()
                metrics.latency.observe(time.perf_counter() - started)
                metrics.audio_seconds.inc(total)
            finally:  # a client that hangs up (or a timeout) cancels the request inside the engine
                handle.cancel()

        async def raw():
            async for _, data in audio_chunks():
                if data:
                    yield data

        async def sse():
            async for chunk, data in audio_chunks():
                if data:
                    yield f"data: {json.dumps({'type': 'speech.audio.delta', 'audio': base64.b64encode(data).decode()})}\n\n"
            yield f"data: {json.dumps({'type': 'speech.audio.done', 'usage': {'input_tokens': len(text)}})}\n\n"

        if body.stream_format == "sse":
            return StreamingResponse(sse(), media_type="text/event-stream")
        return StreamingResponse(raw(), media_type=CONTENT_TYPES[body.response_format])

    return app
