"""The Perth watermark's cost: the `resemble-perth` package (what the reference calls) against Cadence's own
computation of the same mark (`cadence.watermark`), side by side in one process, alternating, on the CPU (or
WM_DEVICE=cuda), for clips of several lengths and torch thread counts; plus each one's load in a fresh process
(imports and weights). Also the largest difference between the two outputs.
Usage: python scripts/watermark_ab.py OUT.json [OUT.md] [ROUNDS]   (needs resemble-perth installed)"""

import json
import platform
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

warnings.simplefilter("ignore")
DEVICE = __import__("os").environ.get("WM_DEVICE", "cpu")
RATE = 24000
CLIPS_S = (2.0, 14.5, 30.0)
THREADS = (1, 2)
LOADS = {"perth": "import perth; perth.PerthImplicitWatermarker(device='{d}')",
         "cadence": "from cadence import watermark; assert watermark.preload('{d}'), watermark.unavailable_reason()"}


def speechlike(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (t % 1.0 < 0.6) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def load_time(name: str) -> float:
    code = f"import time; t = time.perf_counter(); {LOADS[name].format(d=DEVICE)}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(out_json: str, out_md: str | None, rounds: int) -> None:
    import perth
    from cadence import watermark as wm
    ref = perth.PerthImplicitWatermarker(device=DEVICE)
    marks = {"perth": lambda w: ref.apply_watermark(w, sample_rate=RATE),
             "cadence": lambda w: wm.apply(w, RATE, DEVICE)[0]}
    rows = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        for seconds in CLIPS_S:
            wav = speechlike(seconds)
            outs = {name: f(wav) for name, f in marks.items()}  # warm-up, and the outputs compared
            times = {name: [] for name in marks}
            for _ in range(rounds):
                for name, f in marks.items():
                    t = time.perf_counter()
                    f(wav)
                    times[name].append(time.perf_counter() - t)
            med = {name: statistics.median(v) for name, v in times.items()}
            rows.append({"threads": threads, "clip_s": seconds, "perth_ms": 1e3 * med["perth"],
                         "cadence_ms": 1e3 * med["cadence"], "speedup": med["perth"] / med["cadence"],
                         "max_abs_diff": float(np.abs(outs["perth"] - outs["cadence"]).max())})
            print(json.dumps(rows[-1]), flush=True)
    loads = {name: [load_time(name) for _ in range(3)] for name in LOADS}
    result = {"device": DEVICE, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "python": platform.python_version(), "rounds": rounds, "rows": rows,
              "load_s": {name: statistics.median(v) for name, v in loads.items()}, "load_runs_s": loads}
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1)
    if out_md:
        lines = [f"Perth watermark, `resemble-perth` vs Cadence, {DEVICE}, median of {rounds} alternating rounds",
                 "", "| torch threads | clip | Perth | Cadence | speed-up | max abs difference |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['threads']} | {r['clip_s']:g} s | {r['perth_ms']:.1f} ms | {r['cadence_ms']:.1f} ms | "
                  f"{r['speedup']:.2f}× | {r['max_abs_diff']:.1e} |" for r in rows]
        lines += ["", "| load in a fresh process (median of 3) | Perth | Cadence |", "|---|---|---|",
                  f"| imports and weights | {result['load_s']['perth']:.2f} s | {result['load_s']['cadence']:.2f} s |"]
        with open(out_md, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None, int(sys.argv[3]) if len(sys.argv) > 3 else 5)
