"""Turns on the GPU for T3's decode (the engine thread) and S3Gen's stream windows (the audio worker).

With `EngineConfig.overlap_audio` off (the default), a round of decode steps, an admission and a batch of stream
windows each take a first-come-first-served turn that ends once its GPU work is done, so no window kernel runs
beside a decode kernel. Measured on an H100: with the two threads' CUDA graphs (T3 decode, batched window CFM)
replaying side by side on two streams, the GPU stalled for 12-30 s at a time, and with 32 streaming clients it
stopped for good, each thread blocked in a CUDA call on work that never finished; with turns the same load
completed. Finished requests' S3Gen batches still run beside the decode (they never stalled, and that overlap is
worth 1.6-1.8x throughput on an H100); overlap on lets windows overlap too.
"""

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
