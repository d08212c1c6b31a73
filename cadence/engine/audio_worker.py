"""S3Gen for the engine: its own thread and CUDA stream, so the flow, CFM and vocoder of finished requests
(and the windows of streaming ones) run on the GPU alongside T3's decode steps instead of between them.

The engine thread hands over plain host data (token lists) and never waits for this worker; whatever piles
up while it is busy is taken in one go: finished requests as padded length-grouped batches, stream windows
as padded batches, one round per window of each stream. Windows that bring a stream its first audio go first,
as a batch of their own, and while they render the engine holds its decode steps (`FirstAudio`): a listener
waiting for the first sound matters more than the decode of audio that is already ahead of real time."""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import numpy as np
import torch

from .oom import retry_alone_on_oom
from .rng import wait_for_device
from .state import _Running
from .streaming import WINDOW_TOKENS, render_windows
from .t3_runner import clean_speech_tokens


class FirstAudio:
    """Streams whose first audio is handed to the worker and not yet rendered. With
    `EngineConfig.first_audio_priority`, the engine waits on this before its next decode steps, so the first
    windows get the GPU (and the GIL) to themselves; the wait is capped, so a stall cannot stop T3."""

    def __init__(self):
        self._n = 0
        self._cv = threading.Condition()

    @property
    def pending(self) -> int:
        return self._n

    def add(self, n: int) -> None:
        if n:
            with self._cv:
                self._n += n

    def done(self, n: int) -> None:
        if n:
            with self._cv:
                self._n -= n
                self._cv.notify_all()

    def wait(self, timeout: float) -> bool:
        """Block until no first audio is pending (True) or `timeout` seconds pass (False)."""
        if self._n <= 0:  # the common case, without the lock
            return True
        with self._cv:
            return self._cv.wait_for(lambda: self._n <= 0, timeout)


def window_due(r: _Running) -> bool:
    """A small first window, then larger ones (WINDOW_TOKENS), counted in decode steps since the last one."""
    return r.steps - r.window_steps >= WINDOW_TOKENS[min(r.windows, len(WINDOW_TOKENS) - 1)]


class AudioWorker:
    def __init__(self, engine):
        self.engine = engine
        dev = engine.tts.device
        # High priority: a stream's next audio (someone is listening) goes ahead of the next decode steps.
        self.stream = torch.cuda.Stream(device=dev, priority=-1) if dev.type == "cuda" else None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self.first = FirstAudio()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="cadence-audio", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def _put(self, kind: str, items: list, firsts: int) -> None:
        with self._lock:
            self._pending += 1
        self.first.add(firsts)
        self._jobs.put((kind, items, firsts))

    def finished(self, requests: list[_Running]) -> None:
        """Requests whose T3 is done: render them (streams: their final window). Call before counting their
        windows: a stream handed no window before brings its first audio here."""
        self._put("finished", requests, sum(r.stream is not None and r.windows == 0 for r in requests))

    def windows(self, requests: list[_Running], tokens: list[list[int]]) -> None:
        """Streaming requests' next windows over these tokens so far (before their `windows` count is raised)."""
        self._put("windows", list(zip(requests, tokens)), sum(r.windows == 0 for r in requests))

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    # --- the worker thread -------------------------------------------------------------------------------
    def _main(self) -> None:
        dev = self.engine.tts.device
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            jobs = [job]
            while True:  # take everything that piled up meanwhile: bigger batches
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                jobs.append(more)
            firsts = [sum(j[2] for j in jobs)]  # released once the first windows are rendered (or on failure)
            try:
                with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
                    self._run(jobs, firsts)
            finally:
                self.first.done(firsts[0])
                with self._lock:
                    self._pending -= len(jobs)

    def _release_firsts(self, firsts: list[int]) -> None:
        self.first.done(firsts[0])
        firsts[0] = 0

    def _run(self, jobs: list, firsts: list[int]) -> None:
        eng = self.engine
        finished = [r for kind, items, _ in jobs if kind == "finished" for r in items]
        # Each stream's windows in order (a window continues the state its predecessor left), several streams'
        # windows of the same round as one batch. Window boundaries are fixed by decode steps, not by timing,
        # so a seed gives one result however busy this worker is.
        per_stream: dict[int, list[tuple[_Running, list[int], bool]]] = {}
        for kind, items, _ in jobs:
            for entry in items:
                if kind == "finished":
                    if entry.stream is not None and not entry.handle.cancelled:
                        per_stream.setdefault(id(entry), []).append((entry, clean_speech_tokens(entry.tokens), True))
                else:
                    per_stream.setdefault(id(entry[0]), []).append((entry[0], entry[1], False))
        live = []
        for r in finished:
            if r.handle.cancelled:
                eng._cancel(r)
            elif r.stream is None:
                live.append(r)
        # Streams with no audio yet: their first windows alone, ahead of everything else
        first = [todo.pop(0) for todo in per_stream.values() if todo[0][0].stream.mel is None]
        if first:
            self._windows(first)
            per_stream = {k: v for k, v in per_stream.items() if v}
        self._release_firsts(firsts)
        while per_stream:
            self._windows([todo.pop(0) for todo in per_stream.values()])
            per_stream = {k: v for k, v in per_stream.items() if v}
        if live:
            self._batch(live)

    def _windows(self, todo: list[tuple[_Running, list[int], bool]]) -> None:
        eng, t0 = self.engine, time.perf_counter()
        states = [r.stream for r, _, _ in todo]
        groups = retry_alone_on_oom(lambda idx: render_windows(eng.tts.audio_runner, [(states[i], todo[i][1], todo[i][2])
                                                                                  for i in idx]),
                               len(todo), [st.rng for st in states])
        s3_s = time.perf_counter() - t0
        eng.stats.s3gen_s += s3_s
        for idx, waves in groups:
            if isinstance(waves, Exception):
                self._failed(waves, [todo[i][0] for i in idx])
                continue
            for i, wav in zip(idx, waves):
                r, tokens, final = todo[i]
                if wav.size or final:
                    eng._post.submit(eng._emit, r, wav, tokens, s3_s, final)

    def _batch(self, live: list[_Running]) -> None:
        eng, t0 = self.engine, time.perf_counter()
        speech = [clean_speech_tokens(r.tokens) for r in live]
        todo = [i for i, s in enumerate(speech) if s]
        waves: dict[int, np.ndarray] = {}

        def render(idx: list[int]) -> list[np.ndarray]:
            items = [(torch.tensor(speech[todo[i]]), eng.tts.voice_cache.get(live[todo[i]].handle.request.voice).voice,
                      live[todo[i]].rng) for i in idx]
            out = eng.tts.audio_runner.synthesize_batch(items)
            wait_for_device(eng.tts.device)
            return [w[0].cpu().numpy() for w in out]
        groups = retry_alone_on_oom(render, len(todo), [live[i].rng for i in todo]) if todo else []
        failed = set()
        for idx, out in groups:
            if isinstance(out, Exception):
                self._failed(out, [live[todo[i]] for i in idx])
                failed.update(todo[i] for i in idx)
            else:
                waves.update((todo[i], w) for i, w in zip(idx, out))
        s3_s = time.perf_counter() - t0
        eng.stats.s3gen_s += s3_s
        for i, r in enumerate(live):
            if i not in failed:
                eng._post.submit(eng._emit, r, waves.get(i, np.zeros(0, np.float32)), speech[i], s3_s, True)

    def _failed(self, exc: Exception, requests: list[_Running]) -> None:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        for r in requests:
            self.engine._fail(r, exc)

