"""The postprocess lanes' watermark worker processes (why a process: `watermark_worker`).

Each lane owns one worker and talks to it from its one thread, so a request's chunks stay in order and the lanes
still run side by side; a lane blocked on its pipe holds no interpreter lock. The engine never waits for a worker:
- until a worker has loaded Perth (a few seconds of imports, during the engine's own start-up), its lane marks
  chunks in the engine's process, as without workers;
- a worker that dies is started again and the chunk it held is marked in the engine's process (a warning says
  so); after `MAX_RESTARTS` restarts the lane stays in the engine's process;
- a worker exits when its pipe closes, so a killed engine leaves none behind."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from .watermark_worker import FAILED, MARKED, READY_FRAME, REPLY_FRAME, REQUEST_FRAME, read_exact, read_samples

log = logging.getLogger("cadence")

MAX_RESTARTS = 3
"""Restarts of one lane's worker before that lane marks in the engine's process for good."""


class WatermarkWorker:
    """One worker process, used from one lane thread. `apply` returns None whenever the caller should mark the
    chunk itself (worker still loading, Perth unavailable there, worker gone)."""

    def __init__(self, torch_threads: int, nice: int = 0):
        self.torch_threads, self.nice = max(1, int(torch_threads)), max(0, int(nice))
        self.restarts = 0
        self.chunks_marked = 0
        """Chunks this lane's workers have returned marked."""
        self._proc: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._usable = False
        self._start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the worker has loaded Perth (or failed to); True when it takes chunks."""
        self._ready.wait(timeout)
        return self._usable

    def apply(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, bool] | None:
        """(marked audio, watermarked) from the worker, or None: mark it in this process instead."""
        if not (self._ready.is_set() and self._usable):
            return None
        proc = self._proc
        samples = np.ascontiguousarray(wav, dtype=np.float32).reshape(-1)
        try:
            proc.stdin.write(REQUEST_FRAME.pack(int(sample_rate), samples.size))
            proc.stdin.write(memoryview(samples).cast("B"))
            proc.stdin.flush()
            head = read_exact(proc.stdout, REPLY_FRAME.size)
            if head is None:
                raise EOFError("its pipe closed")
            status, n = REPLY_FRAME.unpack(head)
            if status == FAILED:
                message = read_exact(proc.stdout, n) or b""
                log.warning("watermark worker: %s; this chunk is marked in the engine's process",
                            message.decode("utf-8", "replace"))
                return None
            out = read_samples(proc.stdout, n)
            if out is None:
                raise EOFError("its pipe closed mid-reply")
            self.chunks_marked += int(status == MARKED)
            return out.reshape(wav.shape) if out.size == wav.size else out, status == MARKED
        except (OSError, EOFError, ValueError) as exc:
            self._replace(exc)
            return None

    def close(self, timeout: float = 5.0) -> None:
        """Close the worker's pipe (it exits) and reap it; killed if it does not exit within `timeout`."""
        proc, self._proc, self._usable = self._proc, None, False
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def _start(self) -> None:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = ""  # never a CUDA context (hundreds of MB of VRAM per process)
        env["OMP_NUM_THREADS"] = str(self.torch_threads)
        # the worker imports this very Cadence, wherever it was imported from
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        # -c rather than -m: the package imports this module itself, and runpy would warn about running it twice
        cmd = [sys.executable, "-c", "import sys; from cadence.engine.watermark_worker import main; sys.exit(main())",
               "--threads", str(self.torch_threads), "--nice", str(self.nice)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        ready = threading.Event()
        self._proc, self._ready, self._usable = proc, ready, False
        threading.Thread(target=self._await_ready, args=(proc, ready), name="cadence-wm-start", daemon=True).start()

    def _await_ready(self, proc: subprocess.Popen, ready: threading.Event) -> None:
        try:
            head = read_exact(proc.stdout, READY_FRAME.size)
            status = READY_FRAME.unpack(head)[0] if head is not None else None
            if status is not None and status != MARKED:
                read_exact(proc.stdout, READY_FRAME.unpack(head)[1])  # the reason; the in-process path warns
        except (OSError, ValueError):  # closed while it was loading
            status = None
        self._usable = status == MARKED and proc is self._proc
        ready.set()

    def _replace(self, exc: BaseException) -> None:
        pid = self.pid
        self.close(timeout=1.0)
        if self.restarts >= MAX_RESTARTS:
            log.warning("watermark worker %s is gone (%s) and was restarted %d times; this lane now marks in "
                        "the engine's process", pid, exc, self.restarts)
            return
        self.restarts += 1
        log.warning("watermark worker %s is gone (%s); starting another, this chunk is marked in the engine's "
                    "process", pid, exc)
        self._start()


def start_workers(lanes: int, torch_threads: int, nice: int = 0) -> list[WatermarkWorker]:
    """One worker per lane, each with `torch_threads` CPU threads, `nice` below the engine."""
    return [WatermarkWorker(torch_threads, nice) for _ in range(lanes)]
