"""Long text to one audio file: split into chunks, render them together on the batched engine, join them
with matched pauses and short fades. Each finished chunk is kept under `<output>.parts/`, so an interrupted
run resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio.encode import encode_all
from .engine.request import Request
from .text.split import DEFAULT_MAX_TOKENS, split_paragraphs, split_text

EXTENSIONS = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".aac": "aac",
              ".pcm": "pcm"}


def join_audio(waves: list[np.ndarray], sample_rate: int, pause_s: float = 0.15, fade_s: float = 0.01,
               paragraph_ends: set[int] = frozenset(), paragraph_pause_s: float = 0.6) -> np.ndarray:
    """Chunks joined by `pause_s` of silence (`paragraph_pause_s` after a chunk whose index is in
    `paragraph_ends`), each chunk's edges faded over `fade_s` (no clicks at the cuts)."""
    fade = int(fade_s * sample_rate)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade, dtype=np.float32))
    out = []
    for i, w in enumerate(waves):
        gap = np.zeros(int((paragraph_pause_s if i - 1 in paragraph_ends else pause_s) * sample_rate), np.float32)
        w = np.asarray(w, np.float32).copy()
        k = min(fade, w.size)
        if k:
            w[:k] *= ramp[:k]
            w[-k:] *= ramp[:k][::-1]
        out += [gap, w] if i else [w]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def chunk_text(tts, text: str, max_tokens: int = DEFAULT_MAX_TOKENS, language: str | None = None) -> list[str]:
    return split_text(text, count=lambda s: len(tts.text_ids(s, language)), max_tokens=max_tokens)


def paragraph_chunks(tts, text: str, max_tokens: int = DEFAULT_MAX_TOKENS,
                     language: str | None = None) -> tuple[list[str], set[int]]:
    """The chunks of `text` and the indices of those that end a paragraph (a longer pause follows them)."""
    chunks, ends = [], set()
    for paragraph in split_paragraphs(text, count=lambda s: len(tts.text_ids(s, language)), max_tokens=max_tokens):
        chunks += paragraph
        ends.add(len(chunks) - 1)
    return chunks, ends


def render_file(tts, text: str, output: str | os.PathLike, voice=None, seed: int | None = None,
                max_chunk_tokens: int = DEFAULT_MAX_TOKENS, progress: bool = True, speed: float = 1.0,
                **knobs) -> dict:
    """Render `text` to `output` (format from its extension). Chunk i uses seed + i, so one seed gives one
    result; finished chunks are kept in `<output>.parts/` until the file is written."""
    out = Path(output)
    fmt = EXTENSIONS.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown output extension {out.suffix!r}; use one of {', '.join(EXTENSIONS)}")
    tts.params(**knobs)  # the knobs (the language included) checked before the text is cut
    chunks, paragraph_ends = paragraph_chunks(tts, text, max_chunk_tokens, knobs.get("language"))
    if not chunks:
        raise ValueError("the text is empty")
    voice = voice or tts.default_voice
    if voice is None:
        raise ValueError("no voice: this checkpoint has no conds.pt; pass --voice or --voice-audio")
    seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 2) if seed is None else seed
    parts = Path(str(out) + ".parts")
    key = hashlib.sha256(json.dumps([chunks, seed, sorted(knobs.items()), speed, tts.fingerprint], default=str)
                         .encode()).hexdigest()
    manifest = parts / "manifest.json"
    if parts.is_dir() and (not manifest.is_file() or json.loads(manifest.read_text()).get("key") != key):
        shutil.rmtree(parts)  # made for another text, seed or model: start over
    parts.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"key": key, "chunks": len(chunks)}))
    done = {i for i in range(len(chunks)) if (parts / f"{i:05d}.wav").is_file()}
    handles = {i: tts.submit(Request(chunks[i], voice, tts.params(**{**knobs, "seed": seed + i}),
                                     speed=speed))
               for i in range(len(chunks)) if i not in done}
    t0, audio_s = time.perf_counter(), 0.0
    for n, (i, h) in enumerate(handles.items(), 1):
        wav = h.result().samples
        tmp = parts / f"{i:05d}.tmp.wav"
        sf.write(str(tmp), wav, tts.sample_rate, subtype="FLOAT")
        os.replace(tmp, parts / f"{i:05d}.wav")
        audio_s += wav.size / tts.sample_rate
        if progress:
            el = time.perf_counter() - t0
            eta = el / n * (len(handles) - n)
            print(f"\r[{len(done) + n}/{len(chunks)} chunks] {audio_s:.1f} s of audio, "
                  f"{el:.1f} s elapsed, ETA {eta:.0f} s", end="", file=sys.stderr, flush=True)
    if progress and handles:
        print(file=sys.stderr)
    waves = [sf.read(str(parts / f"{i:05d}.wav"), dtype="float32")[0] for i in range(len(chunks))]
    audio = join_audio(waves, tts.sample_rate, paragraph_ends=paragraph_ends)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(encode_all(audio, fmt, tts.sample_rate))
    os.replace(tmp, out)
    shutil.rmtree(parts)
    return {"chunks": len(chunks), "resumed": len(done), "seconds": audio.size / tts.sample_rate, "seed": seed,
            "wall_s": time.perf_counter() - t0}
