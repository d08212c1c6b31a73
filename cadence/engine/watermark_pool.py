"""The postprocess lanes' watermark worker processes (why a process: `watermark_worker`).

Each lane owns one worker and talks to it from its one thread, so a request's chunks stay in order and the lanes
still run side by side; a lane blocked on its pipe holds no interpreter lock. The engine never waits for a worker:
until a worker has loaded Perth (a few seconds of imports, during the engine's own start-up), or when it has died
(it is replaced, `cadence.pipe_worker`), its lane marks the chunk in the engine's process, as without workers."""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from ..pipe_worker import FAILED, OK, PipeWorker, WorkerGone, close_all
from .watermark_worker import REQUEST_FRAME

log = logging.getLogger("cadence")


def lane_count() -> int:
    """Postprocess lanes: half the CPU cores (the rest serve HTTP, encoding and the GPU threads), 1 to 8."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def lane_team(lanes: int) -> int:
    """Each lane's torch threads: together the lanes' teams fill at most the cores."""
    return max(1, (os.cpu_count() or 2) // lanes)


class WatermarkWorker:
    """One lane's worker. `apply` returns None whenever the caller should mark the chunk itself."""

    def __init__(self, torch_threads: int, nice: int = 0):
        threads, nice = max(1, int(torch_threads)), max(0, int(nice))
        self.settings = (threads, nice)
        self.process = PipeWorker("cadence.engine.watermark_worker", ["--threads", str(threads), "--nice", str(nice)],
                                  env={"OMP_NUM_THREADS": str(threads)})
        self.chunks_marked = 0
        """Chunks this lane's workers have returned marked."""

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def restarts(self) -> int:
        return self.process.restarts

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.process.wait_ready(timeout)

    def apply(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, bool] | None:
        """(marked audio, watermarked) from the worker, or None: mark it in this process instead."""
        if not self.process.usable:
            return None
        samples = np.ascontiguousarray(wav, dtype=np.float32).reshape(-1)
        try:
            status, data = self.process.request(REQUEST_FRAME.pack(int(sample_rate), samples.size),
                                                memoryview(samples).cast("B"))
        except WorkerGone:
            return None
        if status == FAILED:
            log.warning("watermark worker: %s; this chunk is marked in the engine's process",
                        data.decode("utf-8", "replace"))
            return None
        out = np.frombuffer(data, dtype=np.float32)
        self.chunks_marked += int(status == OK)
        return (out.reshape(wav.shape) if out.size == wav.size else out), status == OK

    def close(self) -> None:
        self.process.close()


_spares: list[WatermarkWorker] = []
_spares_lock = threading.Lock()


def prestart(lanes: int, torch_threads: int, nice: int = 0) -> None:
    """Start the workers an engine will want before it exists: their imports (seconds) then overlap the
    checkpoint's load in processes of their own instead of following it. `start_workers` adopts them."""
    started = start_workers(lanes, torch_threads, nice)
    with _spares_lock:
        _spares.extend(started)


def start_workers(lanes: int, torch_threads: int, nice: int = 0) -> list[WatermarkWorker]:
    """One worker per lane, each with `torch_threads` CPU threads, `nice` below the engine: started ones waiting
    from `prestart` with those settings first, new ones for the rest."""
    if lanes <= 0:
        return []
    threads, nice = max(1, int(torch_threads)), max(0, int(nice))
    with _spares_lock:
        fits = [w for w in _spares if w.settings == (threads, nice)][:lanes]
        for w in fits:
            _spares.remove(w)
    return fits + [WatermarkWorker(threads, nice) for _ in range(lanes - len(fits))]


def close_spares() -> None:
    """Close the workers `prestart` started that no engine adopted."""
    with _spares_lock:
        spares = list(_spares)
        _spares.clear()
    close_all([w.process for w in spares])
