"""Where a server's start-up went: the seconds since the process started at which each phase ended, shown by
/health (`startup`) and logged once the server is ready, so a slow start can be read off one line."""

from __future__ import annotations

import os
import sys
import time

_IMPORTED = time.monotonic()  # fallback origin where the process's own start time cannot be read


def process_age_s() -> float:
    """Seconds since this process started (Linux: from /proc, so the interpreter's start and the imports count);
    elsewhere, since this module was imported."""
    try:
        with open("/proc/self/stat") as f:
            # field 22 (starttime, in clock ticks since boot) follows the command name, which may hold spaces
            started_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        return max(0.0, uptime_s - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - _IMPORTED


def describe(marks: dict[str, float]) -> str:
    """Phase marks (a `StartupTimeline`'s, or /health's `startup`) as one line: `app 3.1 s, model 8.2 s, ...`."""
    return ", ".join(f"{phase} {t:.1f} s" for phase, t in marks.items())


class StartupTimeline:
    """Phase name -> seconds since the process started when that phase ended, in the order they ended."""

    def __init__(self):
        self.marks: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        """Record that `phase` ended now."""
        self.marks[phase] = round(process_age_s(), 2)

    def report(self) -> None:
        """The marks as one line on stderr (the server's log), once ready."""
        print(f"cadence serve: start-up, seconds after the process started: {describe(self.marks)}",
              file=sys.stderr, flush=True)
