"""The GPU probes' shared timer (the scripts run as `python scripts/NAME.py`, so this folder is on their path)."""

import statistics

import torch


def replay_ms(graph, reps: int = 50) -> float:
    """Median device time (ms, CUDA events) of one replay of a captured CUDA graph: launch gaps out of the figure."""
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return round(statistics.median(times), 3)
