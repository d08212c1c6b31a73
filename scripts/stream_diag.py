"""Timeline of N streams on the engine (window renders, decode rounds), with thread stacks dumped if it stalls.
Usage: python scripts/stream_diag.py CKPT N [TOKENS]"""
import faulthandler
import sys
import time

import torch

from cadence.engine import audio_worker as aw
from cadence.engine.request import Request
from cadence.sampling_params import SamplingParams
from cadence.tts import TTS

ck, N = sys.argv[1], int(sys.argv[2])
tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 250
tts = TTS.from_dir(ck, device="cuda", watermark=False)
t = time.perf_counter()
tts.engine.warmup(1000)
print("warmup", round(time.perf_counter() - t, 1), flush=True)
t0 = [time.perf_counter()]
orig = aw.AudioWorker._windows


def render(self, todo):
    a = time.perf_counter()
    orig(self, todo)
    torch.cuda.synchronize()
    print(f"  render n={len(todo)} tokens={len(todo[0][1])} start={1e3 * (a - t0[0]):.0f} ms "
          f"took={1e3 * (time.perf_counter() - a):.0f} ms", flush=True)


aw.AudioWorker._windows = render
faulthandler.dump_traceback_later(45, repeat=True)
for n in (1, N, N):
    print("level", n, flush=True)
    t0[0] = time.perf_counter()
    hs = [tts.submit(Request("Streaming probe text for many listeners at once.", tts.default_voice,
                             SamplingParams(seed=i, max_new_tokens=tokens), speech_tokens_only=True, ignore_eos=True,
                             stream=True)) for i in range(n)]
    for h in hs:
        h.result()
    print("level done", n, round(time.perf_counter() - t0[0], 2), flush=True)
faulthandler.cancel_dump_traceback_later()
