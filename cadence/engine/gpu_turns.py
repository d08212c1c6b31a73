"""Turns on the GPU for T3's decode (the engine thread) and S3Gen's stream windows (the audio worker).

With `EngineConfig.overlap_audio` off (the default), a round of decode steps, an admission and a batch of stream
windows each take a turn that ends once its GPU work is done, so no window kernel runs beside a decode kernel.
Measured on an H100: with the two threads' CUDA graphs (T3 decode, batched window CFM) replaying side by side on
two streams, the GPU stalled for 12-30 s at a time, and with 32 streaming clients it stopped for good, each thread
blocked in a CUDA call on work that never finished; with turns the same load completed. Finished requests' S3Gen
batches still run beside the decode (they never stalled, and that overlap is worth 1.6-1.8x throughput on an
H100); overlap on lets windows overlap too.

Turns go first come, first served, except that an urgent turn (work a listener is waiting on for a stream's
first audio: its admission, its first decode round, its first window) goes ahead of ordinary ones (later
windows, whose audio is already ahead of real time, and the decode of streams that have sounded). An ordinary
turn lets at most one urgent turn pass it and waits at most `patience_s` for urgent ones, so under a steady
stream of newcomers (every decode round has one when many streams run) windows still get every other turn.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

PATIENCE_S = 0.25  # the longest an ordinary turn is passed over by urgent ones


@dataclass
class _Waiter:
    urgent: bool
    since: float
    granted: bool = False
    passed: int = 0  # urgent turns served ahead of this (ordinary) one


class GpuTurns:
    def __init__(self, overlap: bool, patience_s: float = PATIENCE_S, clock=time.perf_counter):
        self.overlap = overlap
        self.patience_s = patience_s
        self._clock = clock
        self._cv = threading.Condition()
        self._held = False
        self._waiting: list[_Waiter] = []  # in arrival order

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.contextmanager
    def turn(self, urgent: bool = False):
        """Hold the GPU for the body; the body must finish its GPU work. `urgent`: ahead of ordinary turns."""
        if self.overlap:
            yield
            return
        with self._cv:
            if self._held or self._waiting:
                me = _Waiter(urgent, self._clock())
                self._waiting.append(me)
                self._cv.wait_for(lambda: me.granted)
            self._held = True
        try:
            yield
        finally:
            with self._cv:
                nxt = self._next()
                self._held = nxt is not None
                if nxt is not None:
                    self._waiting.remove(nxt)
                    nxt.granted = True
                    self._cv.notify_all()

    def _next(self) -> _Waiter | None:
        """The oldest urgent waiter, unless the oldest waiter is an ordinary one that an urgent one passed already
        or that has waited past its patience; else the oldest."""
        if not self._waiting:
            return None
        oldest = self._waiting[0]
        if oldest.urgent or oldest.passed or self._clock() - oldest.since >= self.patience_s:
            return oldest
        urgent = next((w for w in self._waiting if w.urgent), oldest)
        oldest.passed += urgent is not oldest
        return urgent
