"""Turns on the GPU for the engine's two GPU threads (T3 on the engine thread, S3Gen on the audio worker).

With `EngineConfig.overlap_audio` off (the default), the two threads take first-come-first-served turns: a turn
is a round of decode steps, an admission, or one step of the audio worker, and it ends once its GPU work is
done. No kernel of one thread then runs beside a kernel of the other. On an H100, with both threads' CUDA
graphs replaying side by side on two streams, the GPU stalled for 12-30 s at a time (16 streams) and stopped
for good with 32 streaming clients: each thread blocked in a CUDA call, waiting for work that never finished.
With overlap on, each thread launches whenever it likes (faster where it works)."""

from __future__ import annotations

import contextlib
import threading


class GpuTurns:
    def __init__(self, overlap: bool):
        self.overlap = overlap
        self._cv = threading.Condition()
        self._next = 0  # the next ticket to hand out
        self._serving = 0  # the ticket whose turn it is

    @contextlib.contextmanager
    def turn(self):
        """Hold the GPU for the body (FIFO among the threads asking); the body must finish its GPU work."""
        if self.overlap:
            yield
            return
        with self._cv:
            ticket = self._next
            self._next += 1
            self._cv.wait_for(lambda: self._serving == ticket)
        try:
            yield
        finally:
            with self._cv:
                self._serving += 1
                self._cv.notify_all()
