"""Where `TTS.from_dir` spends a server's `model` phase: `python scripts/load_probe.py CKPT [perth]`, one fresh
process per call. Prints the seconds of the imports, the CUDA context, and the load, then the load's functions by
cumulative time (cProfile, the loading thread only). With `perth`, Perth's preload runs on a thread beside the load
as `cadence serve` does, so the two figures side by side say what the overlap costs the load."""

import cProfile
import pstats
import sys
import threading
import time

t0 = time.perf_counter()
import torch  # noqa: E402

from cadence import watermark  # noqa: E402
from cadence.tts import TTS  # noqa: E402

t_import = time.perf_counter() - t0
t1 = time.perf_counter()
torch.zeros(1, device="cuda")
torch.cuda.synchronize()
t_ctx = time.perf_counter() - t1
perth = None
if sys.argv[2:] == ["perth"]:
    perth = threading.Thread(target=watermark.preload, args=("cpu",))
    perth.start()
prof = cProfile.Profile()
t2 = time.perf_counter()
prof.enable()
tts = TTS.from_dir(sys.argv[1], device="cuda")
torch.cuda.synchronize()
prof.disable()
t_load = time.perf_counter() - t2
if perth is not None:
    perth.join()
t_perth = time.perf_counter() - t2
print(f"imports {t_import:.2f} s, CUDA context {t_ctx:.2f} s, from_dir {t_load:.2f} s"
      + (f", Perth beside done after {t_perth:.2f} s" if perth is not None else ""), flush=True)
pstats.Stats(prof).sort_stats("cumulative").print_stats(28)
