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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 * 2 ** 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit machines


def keep_freed_blocks() -> bool:
    """Let glibc keep freed blocks of up to 32 MiB for reuse instead of handing each back to the OS (process-wide;
    for CPU inference). By default a block above its (adaptive) mmap threshold is mapped on allocation and
    unmapped on free, and the heap's top is trimmed past the trim threshold, so every tensor of a few MB that a
    CPU forward allocates again (an attention block's scores: 5.8 MB at 600 frames) comes back as fresh pages the
    kernel faults in and zeroes: on the 2-core CPU machine that was half the time of the flow's blocked attention
    (6.0 ms a block of 8 heads, 3.2 ms with the blocks kept). Freed memory then stays in the process until
    `malloc_trim` (a server calls it after requests, `HostTrimmer`). -> whether it was set (glibc only)."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 30))


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
