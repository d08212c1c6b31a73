"""The vocoder over a 30 s clip in one piece against a run of frames at a time (GPU), at several run sizes:
device time per call (CUDA events, median of 7, alternating) and the peak memory above what was allocated before.
A full-size HiFT with random weights (fp32, weight norm folded, as the default plan loads it).
Usage: python scripts/vocoder_runs_ab.py [FRAMES]"""

import statistics
import sys

import torch

from cadence.engine.vocoder_chunks import vocode_in_runs
from cadence.memory.placement import fold_weight_norm
from cadence.models.s3gen.hift import HiFTConfig, HiFTGenerator


def main(T: int = 1505) -> None:
    torch.manual_seed(0)
    hift = HiFTGenerator(HiFTConfig()).eval()
    for p in hift.parameters():
        p.data.normal_(0, 0.05)
    fold_weight_norm(hift)
    hift = hift.cuda()
    mel = (torch.randn(1, 80, T) * 0.5 - 3).cuda()
    phase = (torch.rand(1, 9, 1) * 6.28 - 3.14).cuda()
    noise = torch.randn(1, 9, T * 480).cuda()
    variants = {"one piece": lambda: hift(mel, phase, noise)}
    for run in (256, 384, 512, 768):
        variants[f"runs of {run}"] = lambda run=run: vocode_in_runs(hift, mel, phase, noise, run)
    times = {k: [] for k in variants}
    peaks = {}
    with torch.inference_mode():
        for fn in variants.values():
            fn()
        for _ in range(7):
            for name, fn in variants.items():
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
                peaks[name] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    for name in variants:
        print(f"{name:12s} {statistics.median(times[name]):7.2f} ms  peak +{peaks[name]:6.1f} MB", flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
