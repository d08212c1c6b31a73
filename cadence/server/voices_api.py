"""Voice management over HTTP: upload (multipart), list, show, rename, delete; and Open WebUI's voice list."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import FastAPI, File, Form, UploadFile

from pydantic import BaseModel, Field

from ..audio.io import decode_audio
from ..voices.library import MAX_SOURCE_SECONDS, VoiceError, VoiceExists, VoiceLibrary, validate_name
from .errors import ApiError, documented


class VoiceRename(BaseModel):
    name: str = Field(..., description="the voice's new name")


def add_voice_routes(app: FastAPI, settings, ready, library) -> None:
    """`ready()` -> the loaded TTS (503 before); `library()` -> the app's one VoiceLibrary."""

    def valid(name: str, check) -> str:
        """`check(name)` (a library name rule), its refusal as a 400 naming the `name` field."""
        try:
            return check(name)
        except VoiceError as exc:
            raise ApiError(400, str(exc), param="name", code="invalid_name") from None

    def stored(name: str) -> str:
        """A valid name (400 naming `name` otherwise) that the library holds (404 otherwise)."""
        name = valid(name, validate_name)
        if name not in library():
            raise ApiError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
        return name

    def exists(name: str) -> ApiError:
        return ApiError(409, f"voice {name!r} already exists (send overwrite=true to replace it)", param="name",
                        code="voice_exists")

    @app.post("/v1/voices", status_code=201, responses=documented(400, 401, 409, 413))
    async def add_voice(name: str = Form(...), file: UploadFile = File(...), exaggeration: float = Form(0.5),
                        overwrite: bool = Form(False), language: str | None = Form(None)):
        t = ready()
        name = valid(name, VoiceLibrary.check_new_name)  # 'default' too: the checkpoint's own voice
        if not 0.0 <= exaggeration <= 2.0:
            raise ApiError(400, f"exaggeration must be in [0, 2], got {exaggeration}", param="exaggeration")
        if language is not None:
            from ..text.multilingual import check_language
            try:
                language = check_language(language)
            except ValueError as exc:
                raise ApiError(400, str(exc), param="language") from None
        data = await file.read()
        if len(data) > settings.max_body_mb * 2 ** 20:  # a chunked upload carries no Content-Length to check early
            raise ApiError(413, f"upload of {len(data)} bytes exceeds the {settings.max_body_mb} MB limit",
                           param="file", code="body_too_large")
        if not data:
            raise ApiError(400, "the uploaded file is empty", param="file", code="bad_audio")
        lib = library()
        if name in lib and not overwrite:
            raise exists(name)
        try:
            wav, sr = await asyncio.to_thread(decode_audio, data, file.filename or "upload", MAX_SOURCE_SECONDS)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="file", code="bad_audio") from None
        t.engine  # started: TTS.prepare_voice then runs the preparation on its GPU thread, between decode steps
        try:
            await asyncio.to_thread(lib.add, name, wav, sample_rate=sr, exaggeration=exaggeration, overwrite=overwrite,
                                    language=language)
        except VoiceExists:  # another upload of the name won the race
            raise exists(name) from None
        except ValueError as exc:
            raise ApiError(400, str(exc), param="file", code="bad_audio") from None
        return asdict(lib.info(name))

    @app.patch("/v1/voices/{name}", responses=documented(400, 401, 404, 409))
    async def rename_voice(name: str, body: VoiceRename):
        old = stored(name)
        try:
            await asyncio.to_thread(library().rename, old, body.name)
        except VoiceExists:
            raise exists(body.name) from None
        except VoiceError as exc:
            raise ApiError(400, str(exc), param="name", code="invalid_name") from None
        return asdict(await asyncio.to_thread(library().info, body.name))

    @app.get("/v1/voices")
    async def list_voices():
        infos, errors = await asyncio.to_thread(library().list)
        return {"object": "list", "data": [asdict(i) for i in infos], "errors": errors}

    @app.get("/v1/voices/{name}", responses=documented(400, 401, 404, 422))
    async def show_voice(name: str):
        name = stored(name)
        try:
            return asdict(await asyncio.to_thread(library().info, name))
        except ValueError as exc:  # a damaged file: its message names the file alone
            raise ApiError(422, str(exc), param="name", code="voice_damaged") from None

    @app.delete("/v1/voices/{name}", responses=documented(400, 401, 404))
    async def delete_voice(name: str):
        name = stored(name)
        await asyncio.to_thread(library().remove, name)
        return {"id": name, "deleted": True}

    @app.get("/v1/audio/voices")
    async def openwebui_voices():
        t = ready()
        infos, _ = await asyncio.to_thread(library().list)
        names = (["default"] if t.default_voice is not None else []) + [i.name for i in infos]
        return {"voices": [{"id": n, "name": n} for n in names]}
