"""Helper processes over pipes: CPU work that would otherwise hold the engine process's interpreter lock.

Beside a GPU engine the engine's threads are launch-bound: every torch call gives up the interpreter lock and
takes it back, so each other thread running Python in the same process (the watermark's, the encoders') adds a
wait to each of those calls. Work moved to a process of its own leaves the lock alone. The framing is small and
the same for every kind of worker: the parent writes a request, the worker answers with REPLY_FRAME (a status
and the byte count that follows) and the bytes. The worker's first frame says whether it can work (status OK, or
UNAVAILABLE and the reason). A worker exits when its stdin closes, so a killed parent leaves none behind.

`PipeWorker` is the parent's side: it starts the worker, never waits for its start-up (`usable` stays false until
the ready frame, and callers do the work themselves meanwhile), and replaces a worker that dies (at most
`MAX_RESTARTS` times)."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("cadence")

REPLY_FRAME = struct.Struct("<BQ")  # status, bytes that follow
UNAVAILABLE, OK, FAILED = 0, 1, 2
MAX_RESTARTS = 3
"""Restarts of one worker before its caller does the work itself for good."""


class WorkerGone(Exception):
    """The worker process exited or closed its pipe mid-request."""


def read_exact(stream: BinaryIO, n: int) -> bytes | None:
    """`n` bytes from `stream`, or None at end of stream (a partial frame counts as the end)."""
    parts, left = [], n
    while left:
        part = stream.read(left)
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def reply(stream: BinaryIO, status: int, *parts) -> None:
    """One reply frame and its bytes (bytes-like parts, or a str message)."""
    data = [p.encode("utf-8", "replace") if isinstance(p, str) else memoryview(p).cast("B") for p in parts]
    stream.write(REPLY_FRAME.pack(status, sum(len(d) for d in data)))
    for d in data:
        stream.write(d)
    stream.flush()


def worker_pipes() -> tuple[BinaryIO, BinaryIO]:
    """In a worker: its request and reply pipes. fd 1 then points at stderr, so nothing printed (by the worker or
    a library it loads) can reach the parent as a frame."""
    inp, out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return inp, out


def lower_priority(nice: int) -> None:
    if nice > 0 and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError:
            pass


class PipeWorker:
    """The parent's side of one worker, `python -c "from MODULE import main; main()" ARGS`. Not thread-safe:
    one caller at a time (a lane's thread, or callers holding `lock`)."""

    request_timeout_s: float = 60.0
    """A request not answered within this is the worker's end: it is killed and replaced (the work is then done
    in this process), so a hung worker can never hang its caller. A 30 s clip takes well under a second."""

    def __init__(self, module: str, args: list[str], env: dict[str, str] | None = None):
        self.module, self.args, self.env = module, list(args), dict(env or {})
        self.restarts = 0
        self.lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._usable = False
        self._start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def usable(self) -> bool:
        """Started, and said it can work."""
        return self._ready.is_set() and self._usable

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the worker said whether it can work; True when it can."""
        self._ready.wait(timeout)
        return self._usable

    def request(self, *parts) -> tuple[int, bytes]:
        """Send the bytes-like `parts` as one request; (status, reply bytes). WorkerGone if the worker died (it is
        replaced, while restarts last)."""
        proc = self._proc
        if proc is None or not self.usable:
            raise WorkerGone("no worker running")
        watchdog = threading.Timer(self.request_timeout_s, proc.kill)  # a hung worker's pipes then close
        watchdog.daemon = True
        watchdog.start()
        try:
            for p in parts:
                proc.stdin.write(p)
            proc.stdin.flush()
            head = read_exact(proc.stdout, REPLY_FRAME.size)
            if head is None:
                raise EOFError("its pipe closed")
            status, n = REPLY_FRAME.unpack(head)
            data = read_exact(proc.stdout, n) if n else b""
            if data is None:
                raise EOFError("its pipe closed mid-reply")
            return status, data
        except (OSError, EOFError, ValueError) as exc:
            if not watchdog.is_alive():
                exc = TimeoutError(f"no answer within {self.request_timeout_s} s; killed")
            self._replace(exc)
            raise WorkerGone(str(exc)) from None
        finally:
            watchdog.cancel()

    def close(self, timeout: float = 5.0) -> None:
        """Close the worker's pipe (it exits) and reap it; killed if it does not exit within `timeout`."""
        close_all([self], timeout)

    def _detach(self) -> subprocess.Popen | None:
        """Let go of the worker process and tell it to exit: a worker still starting has no work to finish and
        is killed at once (its imports take seconds); a started one sees its stdin close."""
        proc, started, self._proc, self._usable = self._proc, self._ready.is_set(), None, False
        if proc is None:
            return None
        if not started:
            proc.kill()
        try:
            proc.stdin.close()
        except OSError:
            pass
        return proc

    def _start(self) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **self.env}  # never a CUDA context (VRAM per process)
        # the worker imports this very Cadence, wherever it was imported from
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        # -c rather than -m: the package may import the module itself, and runpy warns about running it twice
        cmd = [sys.executable, "-c", f"import sys; from {self.module} import main; sys.exit(main())", *self.args]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        ready = threading.Event()
        self._proc, self._ready, self._usable = proc, ready, False
        threading.Thread(target=self._await_ready, args=(proc, ready), name="cadence-worker-start",
                         daemon=True).start()

    def _await_ready(self, proc: subprocess.Popen, ready: threading.Event) -> None:
        try:
            head = read_exact(proc.stdout, REPLY_FRAME.size)
            status, n = REPLY_FRAME.unpack(head) if head is not None else (None, 0)
            if status is not None and status != OK:
                read_exact(proc.stdout, n)  # the reason; the caller's own path reports it
        except (OSError, ValueError):  # closed while it was starting
            status = None
        self._usable = status == OK and proc is self._proc
        ready.set()

    def _replace(self, exc: BaseException) -> None:
        pid = self.pid
        self.close(timeout=1.0)
        if self.restarts >= MAX_RESTARTS:
            log.warning("%s worker %s is gone (%s) after %d restarts; its work stays in this process",
                        self.module, pid, exc, self.restarts)
            return
        self.restarts += 1
        log.warning("%s worker %s is gone (%s); starting another, its request is done in this process",
                    self.module, pid, exc)
        self._start()


def wait_all_ready(workers: list[PipeWorker], timeout: float) -> bool:
    """Wait, at most `timeout` s in all, until every worker has said whether it can work; True when all can (or
    there are none)."""
    deadline = time.monotonic() + timeout
    return all(w.wait_ready(max(0.0, deadline - time.monotonic())) for w in workers)


def close_all(workers: list[PipeWorker], timeout: float = 5.0) -> None:
    """Close several workers at once: every pipe closes first, then each is reaped within one shared `timeout`
    (killed past it), so a server stops in the time of its slowest worker, not the sum of them."""
    procs = [p for p in (w._detach() for w in workers) if p is not None]
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
