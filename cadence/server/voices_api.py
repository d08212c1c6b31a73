"""Voice management over HTTP: upload (multipart), list, show, delete; and Open WebUI's voice list."""

from __future__ import annotations

import asyncio
import io
from dataclasses import asdict

import numpy as np
import soundfile as sf
from fastapi import FastAPI, File, Form, UploadFile

from .errors import ApiError


def add_voice_routes(app: FastAPI, settings, ready, library) -> None:
    """`ready()` -> the loaded TTS (503 before); `library()` -> the app's one VoiceLibrary."""

    def decode(data: bytes, filename: str) -> tuple[np.ndarray, int]:
        try:
            wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception:  # noqa: BLE001 - libsndfile could not read it: try FFmpeg (mp3, m4a, webm, ...)
            try:
                import av
                with av.open(io.BytesIO(data)) as c:
                    stream = c.streams.audio[0]
                    frames = [f.to_ndarray().reshape(-1, f.samples).mean(0) for f in
                              (r for frame in c.decode(stream) for r in [frame.reformat(format="flt", layout="mono")])]
                    return np.concatenate(frames).astype(np.float32), stream.rate
            except Exception:  # noqa: BLE001
                raise ApiError(400, f"could not decode {filename!r} as audio", param="file",
                               code="bad_audio") from None
        return wav.mean(axis=1), sr

    @app.post("/v1/voices", status_code=201)
    async def add_voice(name: str = Form(...), file: UploadFile = File(...), exaggeration: float = Form(0.5),
                        overwrite: bool = Form(False)):
        t = ready()
        if not 0.0 <= exaggeration <= 2.0:
            raise ApiError(400, f"exaggeration must be in [0, 2], got {exaggeration}", param="exaggeration")
        data = await file.read()
        if len(data) > settings.max_body_mb * 2 ** 20:  # a chunked upload carries no Content-Length to check early
            raise ApiError(413, f"upload of {len(data)} bytes exceeds the {settings.max_body_mb} MB limit",
                           param="file", code="body_too_large")
        if not data:
            raise ApiError(400, "the uploaded file is empty", param="file", code="bad_audio")
        wav, sr = await asyncio.to_thread(decode, data, file.filename or "upload")
        lib = library()
        if name in lib and not overwrite:
            raise ApiError(409, f"voice {name!r} already exists (send overwrite=true to replace it)", param="name",
                           code="voice_exists")
        t.engine  # started: TTS.prepare_voice then runs the preparation on its GPU thread, between decode steps
        try:
            await asyncio.to_thread(lib.add, name, wav, sample_rate=sr, exaggeration=exaggeration, overwrite=overwrite)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="name" if "name" in str(exc) else "file") from None
        return asdict(lib.info(name))

    @app.get("/v1/voices")
    async def list_voices():
        infos, errors = await asyncio.to_thread(library().list)
        return {"object": "list", "data": [asdict(i) for i in infos], "errors": errors}

    @app.get("/v1/voices/{name}")
    async def show_voice(name: str):
        lib = library()
        if name not in lib:
            raise ApiError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
        try:
            return asdict(await asyncio.to_thread(lib.info, name))
        except ValueError as exc:
            raise ApiError(422, str(exc), param="name") from None

    @app.delete("/v1/voices/{name}")
    async def delete_voice(name: str):
        lib = library()
        if name not in lib:
            raise ApiError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
        await asyncio.to_thread(lib.remove, name)
        return {"id": name, "deleted": True}

    @app.get("/v1/audio/voices")
    async def openwebui_voices():
        t = ready()
        infos, _ = await asyncio.to_thread(library().list)
        names = (["default"] if t.default_voice is not None else []) + [i.name for i in infos]
        return {"voices": [{"id": n, "name": n} for n in names]}
