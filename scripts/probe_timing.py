"""Timers the GPU probe scripts share: the device is synced around what is timed, so the figures are GPU time."""
import statistics
import time


def median_ms(fn, sync, reps: int = 3) -> float:
    """Median wall time of `reps` calls of fn(), in ms, with `sync()` (the device's synchronize) around each."""
    out = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t) * 1e3)
    return round(statistics.median(out), 2)


def recorded(fn, sync, sink: list):
    """fn wrapped to append each call's synced wall time (ms) to `sink`."""
    def wrapped(*a, **k):
        sync()
        t = time.perf_counter()
        out = fn(*a, **k)
        sync()
        sink.append((time.perf_counter() - t) * 1e3)
        return out
    return wrapped


def replay_ms(graph, reps: int = 50) -> float:
    """Median device time (ms, CUDA events) of one replay of a captured CUDA graph: launch gaps out of the figure."""
    import torch
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return round(statistics.median(times), 3)
