"""The server's encoders: beside a GPU engine, a few encoder processes (`cadence.audio.encode_worker` says why);
elsewhere, or until they have started, `StreamEncoder`s in the server's encode threads.

Each response is bound to one worker at its first samples (a free one if any), since the worker holds that
response's encoder state until its last samples; the encode threads call in and wait on the pipe without the
interpreter lock. wav and pcm never leave the server's process (a few numpy operations)."""

from __future__ import annotations

import itertools
import threading

import numpy as np

from ..audio.encode import StreamEncoder
from ..audio.encode_worker import DROP, FINISH, REQUEST_FRAME, WRITE
from ..early_start import encoder_process, take_encoders
from ..pipe_worker import OK, PipeWorker, WorkerGone, close_all, wait_all_ready

PROCESS_FORMATS = ("mp3", "opus", "aac", "flac")


class EncodePool:
    processes: bool | None = None
    """Encode in worker processes. None: when the engine runs on a GPU; True or False force it (tests, A/B)."""

    def __init__(self, workers: int):
        self.size = max(1, int(workers))
        self.workers: list[PipeWorker] = []
        self._turn = itertools.count()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, device, nice: int = 0) -> None:
        """Start the workers, if this engine's `device` calls for them (see `processes`); returns at once."""
        wanted = self.processes if self.processes is not None else getattr(device, "type", str(device)) == "cuda"
        if wanted and not self.workers:  # those `cadence serve` started as it began first (`early_start`)
            started = take_encoders(self.size, nice)
            self.workers = started + [encoder_process(nice) for _ in range(self.size - len(started))]

    def wait_ready(self, timeout: float) -> bool:
        """Wait, at most `timeout` s in all, until every worker has started; True when all can work (or there are
        none). Until then responses are encoded in this process."""
        return wait_all_ready(self.workers, timeout)

    def encoder(self, fmt: str, sample_rate: int):
        """One response's encoder: `write(samples)`, `finish(samples)` and `discard()`, called from the encode
        threads (they block)."""
        if fmt not in PROCESS_FORMATS or not self.workers:
            return _Local(StreamEncoder(fmt, sample_rate))
        return PooledEncoder(self, next(self._ids), fmt, sample_rate)

    def pick(self) -> PipeWorker | None:
        """A usable worker, free if one is; None when none is usable."""
        usable = [w for w in self.workers if w.usable]
        if not usable:
            return None
        start = next(self._turn)
        for i in range(len(usable)):
            w = usable[(start + i) % len(usable)]
            if not w.lock.locked():
                return w
        return usable[start % len(usable)]

    def close(self) -> None:
        close_all(self.workers)
        self.workers = []


class _Local:
    def __init__(self, encoder: StreamEncoder):
        self.write, self.finish = encoder.write, encoder.finish

    def discard(self) -> None:
        pass


class PooledEncoder:
    """A response's encoder in a worker process. While no worker is usable and nothing was sent to one yet it
    encodes in this process; a worker lost mid-response fails that response alone (its audio so far is gone)."""

    def __init__(self, pool: EncodePool, stream_id: int, fmt: str, sample_rate: int):
        self.pool, self.stream_id, self.fmt, self.sample_rate = pool, stream_id, fmt, sample_rate
        self.worker: PipeWorker | None = None
        self._local: StreamEncoder | None = None
        self._open = False

    def write(self, samples: np.ndarray) -> bytes:
        return self._call(WRITE, samples)

    def finish(self, samples: np.ndarray) -> bytes:
        return self._call(FINISH, samples)

    def discard(self) -> int | None:
        """Free the worker's state of a response that ends early (a client that hung up); returns how many
        responses that worker still holds (None when nothing was held)."""
        if not (self._open and self.worker is not None):
            return None
        self._open = False
        try:
            return int(self._request(DROP, np.zeros(0, np.float32))[1] or 0)
        except WorkerGone:
            return None

    def _call(self, op: int, samples: np.ndarray) -> bytes:
        if self._local is None and self.worker is None:
            self.worker = self.pool.pick()
        if self._local is None and self.worker is not None:
            try:
                status, data = self._request(op, np.ascontiguousarray(samples, dtype=np.float32).reshape(-1))
            except WorkerGone as exc:
                status, data = None, str(exc).encode()
            if status == OK:
                self._open = op == WRITE
                return data
            if self._open or status is not None:  # state lost mid-response, or the encoder itself failed
                self._open = False
                raise RuntimeError(f"{self.fmt} encoding failed: {data.decode('utf-8', 'replace')}")
        if self._local is None:
            self._local = StreamEncoder(self.fmt, self.sample_rate)
        return self._local.finish(samples) if op == FINISH else self._local.write(samples)

    def _request(self, op: int, samples: np.ndarray) -> tuple[int, bytes]:
        head = REQUEST_FRAME.pack(op, self.stream_id, self.fmt.encode("ascii"), int(self.sample_rate), samples.size)
        with self.worker.lock:
            return self.worker.request(head, memoryview(samples).cast("B"))
