"""Giving freed host memory back to the OS. glibc keeps the freed blocks of its per-thread arenas for reuse, so a
server whose requests come in all sizes shows an RSS that steps up to each new high-water mark and stays there.
`malloc_trim(0)` returns the free pages; it is called at most once every `interval_s`, off the GPU thread."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import time


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # musl has none
    except OSError:
        return None


class HostTrimmer:
    def __init__(self, interval_s: float = 5.0):
        self.interval_s = interval_s
        self._libc = _glibc()
        self._last = 0.0
        self._lock = threading.Lock()
        self.trims = 0

    def maybe_trim(self) -> bool:
        """Trim if the last trim is at least `interval_s` old; True if it trimmed."""
        if self._libc is None:
            return False
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval_s:
                return False
            self._last = now
        self._libc.malloc_trim(0)
        self.trims += 1
        return True
