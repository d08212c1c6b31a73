"""The FastAPI app, built by `create_app(settings)`: a thin layer over `TTS`, its batched engine and its voice
library. The model loads in the background; /health says starting / ready / error meanwhile.

What `api_key` protects: every /v1/* route (speech, voices, models), Open WebUI's lists included (it sends the
key it is configured with). /health, /metrics and the playground page stay open: put them behind the network
you expose the server on."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine.cpu_priority import helper_nice
from ..early_start import close_unadopted
from ..engine.postprocess import prestart_watermark_workers
from ..sampling_params import SamplingParams
from .encode_pool import EncodePool
from .errors import ApiError, documented, error_body
from .metrics import Metrics
from .settings import ServerSettings
from .startup import StartupTimeline


def bearer_ok(header: str, key: str) -> bool:
    """`Authorization: Bearer <key>`, the scheme in any case (RFC 7235: schemes are case-insensitive)."""
    scheme, _, token = header.strip().partition(" ")
    return scheme.lower() == "bearer" and token.strip() == key


class _Guard:
    """Body-size limit and bearer auth as a plain ASGI middleware (Starlette's BaseHTTPMiddleware would hide
    client disconnects from the handlers, and a disconnect must cancel the request)."""

    def __init__(self, app, settings: ServerSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            send = self._counted(scope, send)
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            length = headers.get("content-length", "")
            limit = self.settings.max_body_mb * 2 ** 20
            if length.isdigit() and int(length) > limit:
                return await JSONResponse(error_body(f"request body of {int(length)} bytes exceeds the "
                                                     f"{self.settings.max_body_mb} MB limit", "invalid_request_error",
                                                     code="body_too_large"), 413)(scope, receive, send)
            key = self.settings.api_key
            if key and scope["path"].startswith("/v1/") and not bearer_ok(headers.get("authorization", ""), key):
                return await JSONResponse(error_body("missing or wrong API key (Authorization: Bearer …)",
                                                     "authentication_error", code="invalid_api_key"),
                                          401)(scope, receive, send)
        await self.app(scope, receive, send)

    def _counted(self, scope, send):
        """`send`, counting the response's status code under its route (/metrics: cadence_http_responses)."""
        path = scope["path"]
        route = path if path in ROUTES else ("/v1/voices/{name}" if path.startswith("/v1/voices/") else "other")

        async def counted(message):
            if message["type"] == "http.response.start":
                self.metrics.responses.labels(route, str(message["status"])).inc()
            await send(message)
        return counted


ROUTES = ("/v1/audio/speech", "/v1/voices", "/v1/models", "/v1/languages", "/v1/audio/models", "/v1/audio/voices", "/health", "/metrics", "/")


FIRST_GRAPHS_MAX_S = 3.0  # the longest `ready` waits for the first-traffic decode graphs (`warmup.first_traffic`)
HELPERS_MAX_S = 20.0  # the longest `ready` waits for the watermark's and the encoders' worker processes


class _State:
    def __init__(self):
        self.status, self.error, self.tts, self.library = "starting", None, None, None
        self.startup = StartupTimeline()


def load_tts(settings: ServerSettings):
    """The `TTS` a server with these settings serves (loaded now, in this thread)."""
    from ..tts import TTS
    return TTS.from_dir(settings.model, device=settings.device, watermark=settings.watermark, family=settings.family,
                        memory_plan=settings.memory_plan, vram_budget=settings.vram_budget, dtype=settings.dtype,
                        max_batch=settings.max_batch, kv_slot_len=settings.kv_slot_len,
                        vocoder_dtype=settings.vocoder_dtype, prepare_device=settings.prepare_device,
                        voice_cache_mb=settings.voice_cache_mb, enforce_eager=settings.enforce_eager,
                        watermark_device=settings.watermark_device, stream_prompt_s=settings.stream_prompt_s,
                        stream_history_s=settings.stream_history_s, stream_windows=settings.stream_windows,
                        first_audio_priority=settings.first_audio_priority,
                        overlap_audio=settings.overlap_audio, compile=settings.compile,
                        cpu_threads=settings.cpu_threads)


def engine_device(settings: ServerSettings):
    """The device the server's engine will run on, known before its checkpoint loads."""
    from ..tts import pick_device
    return pick_device(settings.device)


def _preload_watermark(device: str) -> None:
    from .. import watermark
    watermark.preload(device)


def create_app(settings: ServerSettings, tts=None, health_extra=None) -> FastAPI:
    """`tts`: an already loaded `TTS` (tests, embedding); otherwise `settings.model` loads in the background.
    `health_extra`: a blocking function whose dict joins /health's body (Ray Serve: the deployment's replicas), run
    off the event loop."""
    state, metrics = _State(), Metrics()
    encode_pool = EncodePool(settings.encode_workers)

    @contextlib.asynccontextmanager
    async def lifespan(_):
        state.startup.mark("app")  # imports done, the app built; the port opens next
        if tts is not None:
            load()
        else:
            threading.Thread(target=load, name="cadence-load", daemon=True).start()
        yield
        if state.tts is not None:
            await asyncio.to_thread(state.tts.close)  # graceful: requests already running finish
        encode_pool.close()

    app = FastAPI(title="Cadence", version="0.1.0", description="OpenAI-compatible speech API for Chatterbox",
                  lifespan=lifespan)
    app.state.cadence = state
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])

    def load():
        try:
            # The helper processes start first: their imports (torch, Perth, PyAV; seconds) overlap the
            # checkpoint's load in processes of their own, and hold none of this process's interpreter lock.
            device = tts.device if tts is not None else engine_device(settings)
            helpers = tts is None and prestart_watermark_workers(device, settings.watermark,
                                                                 settings.watermark_device)
            encode_pool.start(device, helper_nice(device))
            state.tts = tts or load_tts(settings)
            engine = state.tts.engine  # started here, not on first use: it adopts the watermark workers
            close_unadopted()  # the engine and the encoders have taken the helpers the command started for them
            state.startup.mark("model")
            # One library object for the app's life (its lock file and re-preparation are per instance).
            state.library = state.tts.library(settings.library) if settings.library else state.tts.library()
            if settings.warmup:  # the GPU thread captures its graphs while serving, missing ones run eagerly
                engine.warmup(background=True)
            if settings.watermark and not (helpers and engine.post.wait_workers(HELPERS_MAX_S)):
                # no workers (or none ready in time): Perth's network and librosa load in this process now,
                # not in the first request
                _preload_watermark(state.tts.watermark_device)
            if settings.watermark:
                state.startup.mark("watermark")
            if encode_pool.workers:  # ready means a first response is encoded beside the engine, not in it
                encode_pool.wait_ready(HELPERS_MAX_S)
                state.startup.mark("encoders")
            if settings.warmup:  # ready means the first burst's decode rounds find their graphs
                engine.warm.wait_first(FIRST_GRAPHS_MAX_S)
                state.startup.mark("first_graphs")
            state.startup.mark("ready")
            state.status = "ready"
            if tts is None:
                state.startup.report()
        except Exception as exc:  # noqa: BLE001 - reported by /health
            close_unadopted()
            state.status, state.error = "error", f"{type(exc).__name__}: {exc}"

    app.add_middleware(_Guard, settings=settings, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(_, exc: ApiError):
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # its loc is a character offset, not a parameter
            return JSONResponse(error_body(f"the request body is not valid JSON ({first.get('ctx', {}).get('error', '')})"
                                           .replace(" ()", ""), "invalid_request_error", None, "invalid_json"), 400)
        param = ".".join(str(p) for p in first.get("loc", ())[1:] if not isinstance(p, int)) or None
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
        body = {"status": state.status, "model": settings.model, "auth": bool(settings.api_key),
                "startup": state.startup.marks}
        if state.error:
            body["error"] = state.error
        if state.tts is not None and state.status == "ready":
            t = state.tts
            # the family's knobs and their defaults (absent: unset, e.g. exaggeration = the voice's own), which
            # the playground shows; the knobs its model lacks are refused when set
            knobs = {k: t.family.defaults.get(k) for k in SamplingParams.names()
                     if k not in ("max_new_tokens", "seed", "language", *t.family.unused_knobs)}
            switches = {k: v for k, v in knobs.items() if isinstance(v, bool)}  # on/off knobs (alignment_stop)
            knobs = {k: v for k, v in knobs.items() if k not in switches}
            body.update(switches=switches, device=str(t.device), plan=t.plan.name, family=t.family.name, sample_rate=t.sample_rate,
                        languages=list(t.family.languages), language_required=t.family.language_required,
                        knobs=knobs, max_new_tokens=t.params().max_new_tokens, **t.engine.load)
        if health_extra is not None:
            body.update(await asyncio.to_thread(health_extra))
        return JSONResponse(body, 200 if state.status != "error" else 503)

    @app.get("/metrics")
    async def prometheus():
        eng = state.tts.engine if state.status == "ready" else None
        return Response(metrics.render(eng), media_type="text/plain; version=0.0.4")

    @app.get("/v1/languages", responses=documented(401, 503))
    async def languages():
        """The language ids the loaded model speaks (`language` in a speech request), with their names."""
        from ..text.multilingual import LANGUAGES
        t = ready()
        return {"object": "list", "required": t.family.language_required,
                "data": [{"id": lang, "name": LANGUAGES[lang]} for lang in t.family.languages]}

    @app.get("/v1/models")
    async def models():
        ids = ready().family.model_ids
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "cadence"}
                                           for m in ids]}

    @app.get("/v1/audio/models")
    async def openwebui_models():  # what Open WebUI asks a TTS endpoint for
        return {"models": [{"id": m, "name": m} for m in ready().family.model_ids]}

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return (Path(__file__).parent / "static" / "index.html").read_text()

    # --- voices -----------------------------------------------------------------------------------------
    def library():
        ready()
        return state.library

    from .voices_api import add_voice_routes
    add_voice_routes(app, settings, ready, library)

    from .speech_api import add_speech_routes
    add_speech_routes(app, settings, ready, library, metrics, encode_pool)

    def openapi():
        """The schema, with the responses the server really sends: validation errors are 400, never 422."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for ops in schema["paths"].values():
                for op in ops.values():
                    responses = op.get("responses", {})
                    if responses.get("422", {}).get("description") == "Validation Error":
                        del responses["422"]
            app.openapi_schema = schema
        return app.openapi_schema
    app.openapi = openapi

    return app
