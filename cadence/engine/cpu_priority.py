"""CPU priority of the worker threads around the GPU threads.

The GPU threads spend little CPU but need it the moment a CUDA call returns: each decode step is a graph launch
and a few small host steps. The CPU-heavy helpers (the watermark's lanes, the server's encoders) can keep every
core busy; at the same priority the scheduler shares cores among all of them, and on an H200 with 16 cores a
Turbo decode step took 6.5 ms while the CPU watermark ran beside it against 2 ms without. The helpers therefore
run at a lower priority (a higher nice value, per thread on Linux): they take the cores the GPU threads leave."""

from __future__ import annotations

import os
import sys
import threading

HELPER_NICE = 10
"""How much lower than the GPU threads the helpers run (nice increment; 19 is the lowest priority)."""


def lower_this_thread(increment: int = HELPER_NICE) -> bool:
    """Raise the calling thread's nice value by `increment` (Linux: nice is per thread; elsewhere setpriority
    would act on the whole process, so nothing is done). True when it was applied. Raising nice needs no
    privilege; a failure leaves the thread as it was."""
    if sys.platform != "linux" or not hasattr(os, "setpriority"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError:
        return False
    return True


def helper_nice(device) -> int:
    """The nice increment of a helper process beside an engine on `device`: HELPER_NICE beside a GPU; 0 beside a
    CPU engine, whose own threads are the CPU work (as `lower_beside_gpu`)."""
    return HELPER_NICE if getattr(device, "type", str(device)) == "cuda" else 0


def lower_beside_gpu(device, torch_threads: int | None = None) -> bool:
    """A helper thread's pool initializer: lower it beside an engine on a GPU (`device`); beside a CPU engine,
    whose own thread is the CPU work and would starve it, leave it as it is. True when lowered.

    `torch_threads`: the intra-op threads this helper's own CPU torch work may use (the Perth watermark's STFT and
    network on the lanes). Every thread that calls a parallel torch op gets a team of its own, as many threads as
    there are cores by default, so eight lanes would run up to eight teams on as many cores as one, spinning
    against each other and the GPU threads; OpenMP's and MKL's thread counts are per calling thread, so this
    bounds this helper's team alone."""
    if device.type != "cuda":
        return False
    if torch_threads is not None:
        import torch
        torch.set_num_threads(max(1, int(torch_threads)))
    return lower_this_thread()
