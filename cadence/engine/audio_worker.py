"""S3Gen for the engine: its own thread and CUDA stream, so the flow, CFM and vocoder of finished requests
(and the windows of streaming ones) run on the GPU alongside T3's decode steps instead of between them.

The engine thread hands over plain host data (token lists) and never waits for this worker. The worker files
what arrives into a backlog (each stream's windows in order, finished one-piece requests) and renders it a step
at a time, taking in new work between steps: windows that bring a stream its first audio, as a batch of their
own; else one round of windows (the next window of each stream, as one padded batch), then the finished
requests as padded length-grouped batches. So a newcomer's first window waits for at most one step, and while
first windows render the engine holds its decode steps (`FirstAudio`): a listener waiting for the first sound
matters more than the decode of audio already ahead of real time."""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import numpy as np
import torch

from ..config import window_tokens
from .oom import retry_alone_on_oom
from .rng import wait_for_device
from .state import _Running
from .streaming import render_windows
from .t3_runner import clean_speech_tokens

Window = tuple[_Running, list[int], bool, bool]  # request, clean tokens so far, final, brings its first audio


class FirstAudio:
    """Streams whose first audio is handed to the worker and not yet rendered. With
    `EngineConfig.first_audio_priority` the engine waits on this before its next decode steps, so the first
    windows get the GPU (and the GIL) to themselves; not while the worker is busy with other work (the first
    windows wait for that step anyway, and T3 may as well decode meanwhile), and never longer than the cap."""

    def __init__(self):
        self._n = 0
        self._behind = False
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

    def behind(self, busy: bool) -> None:
        """The worker is (or is no longer) busy with work other than first windows."""
        if busy != self._behind:
            with self._cv:
                self._behind = busy
                self._cv.notify_all()

    @property
    def holds(self) -> bool:
        """First audio is pending and the worker is free to render it: `wait` would block."""
        return self._n > 0 and not self._behind

    def wait(self, timeout: float) -> bool:
        """Block while first audio is pending and the worker is free to render it; False if `timeout` passed."""
        if not self.holds:  # the common case, without the lock
            return True
        with self._cv:
            return self._cv.wait_for(lambda: self._n <= 0 or self._behind, timeout)


def window_due(r: _Running, ladder: tuple[int, ...]) -> bool:
    """Window k of a stream is due once ladder[k] decode steps (the last size repeated) have run since the
    previous one (`EngineConfig.stream_windows`)."""
    return r.steps - r.window_steps >= window_tokens(ladder, r.windows)


class AudioWorker:
    one_piece_turns = False
    """Finished requests' S3Gen batches take a turn on the GPU as stream windows do (`GpuTurns`) instead of
    running beside the decode."""

    deliver_by_group = True
    """Finished requests leave S3Gen a length group at a time, as each group is rendered (False: once the whole
    backlog taken in is rendered, as before; for A/B runs, `scripts/engine_ab.py`)."""

    def __init__(self, engine):
        self.engine = engine
        dev = engine.tts.device
        # High priority: a stream's next audio (someone is listening) goes ahead of the next decode steps.
        self.stream = torch.cuda.Stream(device=dev, priority=-1) if dev.type == "cuda" else None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._queued = 0  # jobs handed over and not yet filed
        self._has_work = False  # the backlog holds something (set before a filed job leaves `_queued`)
        self._lock = threading.Lock()
        self.first = FirstAudio()
        # worker thread only: each stream's windows in order, and finished one-piece requests
        self._backlog: dict[int, list[Window]] = {}
        self._live: list[_Running] = []
        self._thread = threading.Thread(target=self._main, name="cadence-audio", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._queued > 0 or self._has_work

    def _put(self, items: list[Window | _Running]) -> None:
        with self._lock:
            self._queued += 1
        self.first.add(sum(1 for e in items if isinstance(e, tuple) and e[3]))
        self._jobs.put(items)

    def finished(self, requests: list[_Running]) -> None:
        """Requests whose T3 is done: render them (streams: their final window). A stream handed no window
        before brings its first audio here."""
        tts = self.engine.tts
        self._put([(r, tts.s3gen_tokens(clean_speech_tokens(r.tokens)), True, r.windows == 0)
                   if r.stream is not None else r for r in requests])

    def windows(self, requests: list[_Running], tokens: list[list[int]]) -> None:
        """Streaming requests' next windows over these tokens so far (before their `windows` count is raised)."""
        self._put([(r, t, False, r.windows == 0) for r, t in zip(requests, tokens)])

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    # --- the worker thread -------------------------------------------------------------------------------
    def _main(self) -> None:
        dev = self.engine.tts.device
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)
        while True:
            idle = not (self._backlog or self._live)
            jobs, closing = self._drain(block=idle)
            if closing and idle and not jobs:
                return
            self._file(jobs)
            with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
                self._step()
            self._has_work = bool(self._backlog or self._live)

    def _drain(self, block: bool) -> tuple[list[list], bool]:
        """Everything handed over so far (blocking for the first when `block`): bigger batches. -> (jobs, whether
        `close` was called; its sentinel stays queued until the backlog is done)."""
        jobs = []
        try:
            while True:
                job = self._jobs.get() if block and not jobs else self._jobs.get_nowait()
                if job is None:
                    self._jobs.put(None)
                    return jobs, True
                jobs.append(job)
        except queue.Empty:
            return jobs, False

    def _file(self, jobs: list[list]) -> None:
        eng = self.engine
        for items in jobs:
            for e in items:
                r = e if isinstance(e, _Running) else e[0]
                finished = isinstance(e, _Running) or e[2]
                # failed: its error is delivered; cancelled and done: nothing more of it is rendered
                if r.failed or (finished and r.handle.cancelled):
                    if not r.failed:
                        eng._cancel(r)
                    self.first.done(int(not isinstance(e, _Running) and e[3]))
                elif isinstance(e, _Running):
                    self._live.append(r)
                else:  # a window continues the state its predecessor left: per stream, in order
                    self._backlog.setdefault(id(r), []).append(e)
        if jobs:
            self._has_work = bool(self._backlog or self._live)
            with self._lock:
                self._queued -= len(jobs)

    def _step(self) -> None:
        """Render the next step of the backlog. Window boundaries are fixed by decode steps, not by timing, so
        a seed gives one result however busy this worker is and however its windows are batched."""
        if self._backlog:
            urgent = self.engine.tts.config.first_audio_priority and any(t[0][3] for t in self._backlog.values())
            with self.engine.turns.turn(urgent=urgent):
                self._file(self._drain(block=False)[0])  # what came while it waited: a first window goes now
                if self._render_first():
                    wait_for_device(self.engine.tts.device)
                    return
                self.first.behind(True)
                heads = [todo[0] for todo in self._backlog.values()]
                self._pop(heads)
                self._guarded(self._windows, heads, [e[0] for e in heads])
                self._file(self._drain(block=False)[0])
                self.first.behind(False)
                self._render_first()  # first windows that came during the round, before T3's next turn
                wait_for_device(self.engine.tts.device)  # the turn ends with its GPU work done
        if self._live:
            self.first.behind(True)
            live, self._live = self._live, []
            with self.engine.turns.turn() if self.one_piece_turns else contextlib.nullcontext():
                self._guarded(self._batch, live, live)
            self.first.behind(False)

    def _render_first(self) -> bool:
        """Render the windows that bring streams their first audio, as a batch of their own (in a turn held)."""
        first = [todo[0] for todo in self._backlog.values() if todo[0][3]]
        if not first:
            return False
        self._pop(first)
        try:
            self._guarded(self._windows, first, [e[0] for e in first])
        finally:
            self.first.done(len(first))
        return True

    def _guarded(self, render, items: list, requests: list[_Running]) -> None:
        """A bug in one step fails that step's requests, never the worker thread (its death would hang them all)."""
        try:
            render(items)
        except Exception as exc:  # noqa: BLE001 - reported to each request's caller
            self._failed(exc, requests)

    def _pop(self, heads: list[Window]) -> None:
        for r, *_ in heads:
            todo = self._backlog[id(r)]
            todo.pop(0)
            if not todo:
                del self._backlog[id(r)]

    def _windows(self, todo: list[Window]) -> None:
        eng, t0 = self.engine, time.perf_counter()
        states = [r.stream for r, *_ in todo]
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
                r, tokens, final, _ = todo[i]
                if wav.size or final:  # a final chunk reports the speech tokens (without S3Gen's silence tail)
                    eng.post.submit(r, wav, clean_speech_tokens(r.tokens) if final else [], s3_s, final)

    def _batch(self, live: list[_Running]) -> None:
        """Finished one-piece requests through S3Gen's padded batches, each request handed to postprocess as soon
        as its length group is rendered (`synthesize_batch(on_done=...)`), not after the whole backlog."""
        eng, t0 = self.engine, time.perf_counter()
        speech = [clean_speech_tokens(r.tokens) for r in live]
        todo = [i for i, s in enumerate(speech) if s]
        for i, r in enumerate(live):
            if not speech[i]:  # nothing to render: its (empty) audio goes now
                eng.post.submit(r, np.zeros(0, np.float32), speech[i], 0.0, True)
        delivered: set[int] = set()
        counted = [t0]  # S3Gen time is counted up to each delivery, before the requests' callers can see it
        held: list[tuple[int, torch.Tensor]] = []  # without `deliver_by_group`: until the backlog is rendered

        def deliver(idx: list[int], waves: list[torch.Tensor]) -> None:
            delivered.update(idx)
            held.extend(zip(idx, waves))
            if self.deliver_by_group:
                hand_out()

        def hand_out() -> None:
            if not held:
                return
            wait_for_device(eng.tts.device)
            now = time.perf_counter()
            s3_s, eng.stats.s3gen_s, counted[0] = now - t0, eng.stats.s3gen_s + now - counted[0], now
            for i, w in held:
                eng.post.submit(live[i], w[0].cpu().numpy(), speech[i], s3_s, True)
            held.clear()

        def render(idx: list[int]) -> None:
            # After an out-of-memory retry (`retry_alone_on_oom`), requests already delivered are not rendered again.
            rows = [todo[j] for j in idx if todo[j] not in delivered]
            if not rows:
                return
            tts = eng.tts
            items = [(torch.tensor(tts.s3gen_tokens(speech[i])), tts.voice_cache.get(live[i].handle.request.voice).voice,
                      live[i].rng) for i in rows]
            tts.audio_runner.synthesize_batch(items, speeds=[live[i].handle.request.speed for i in rows],
                                              on_done=lambda pos, waves: deliver([rows[p] for p in pos], waves))
        groups = retry_alone_on_oom(render, len(todo), [live[i].rng for i in todo]) if todo else []
        hand_out()
        eng.stats.s3gen_s += time.perf_counter() - counted[0]
        for idx, out in groups:
            if isinstance(out, Exception):
                self._failed(out, [live[todo[j]] for j in idx if todo[j] not in delivered])

    def _failed(self, exc: Exception, requests: list[_Running]) -> None:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        for r in requests:
            self._backlog.pop(id(r), None)  # a failed stream's later windows would continue a broken state
            self.engine._fail(r, exc)

