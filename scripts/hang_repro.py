"""Reproduce (or rule out) the GPU hang seen with 32 streaming clients, without HTTP, one variant per run.

C client threads each submit a streaming request of random length (75-750 tokens), read it to the end and
submit the next, for SECONDS. A watchdog prints every thread's stack and exits with code 3 when neither the
engine's decode steps nor its finished count move for STALL seconds. One JSON line per run.

Variants (how the engine's two GPU threads share the GPU):
  turns            the default: stream windows and decode rounds take turns (GpuTurns)
  overlap          overlap_audio=True: windows on the audio worker's high-priority stream beside the decode
  overlap-normal   as overlap, the audio worker's stream at normal priority
  overlap-eager    as overlap, the CFM without CUDA graphs on the audio worker (T3's decode graphs stay)

Usage: python scripts/hang_repro.py CKPT VARIANT [CLIENTS=32] [SECONDS=120] [STALL=30]"""

import faulthandler
import json
import os
import random
import sys
import threading
import time

import torch

from cadence.engine.request import Request
from cadence.sampling_params import SamplingParams
from cadence.tts import TTS

ck, variant = sys.argv[1], sys.argv[2]
clients, seconds, stall = (int(a) for a in [*sys.argv[3:6], *["32", "120", "30"][len(sys.argv[3:6]):]])
device = "cuda" if torch.cuda.is_available() else "cpu"
tts = TTS.from_dir(ck, device=device, watermark=False, overlap_audio=variant != "turns")
eng = tts.engine
eng.warmup(750)
if variant == "overlap-normal" and eng.audio.stream is not None:
    eng.audio.stream = torch.cuda.Stream()  # read by the worker at each step
if variant == "overlap-eager":
    tts.audio_runner.cfm_graphs = None
longest = min(750, tts.t3.cfg.max_speech_tokens - 8)
done, failed, stop = [0], [0], time.time() + seconds


def client(k: int) -> None:
    rnd = random.Random(k)
    i = 0
    while time.time() < stop:
        req = Request("Streaming hang probe, a sentence of ordinary length for many listeners.", tts.default_voice,
                      SamplingParams(seed=1000 * k + i, max_new_tokens=rnd.randint(75, longest)),
                      speech_tokens_only=True, ignore_eos=True, stream=True)
        try:
            for _ in eng.submit(req):
                pass
            done[0] += 1
        except Exception:  # noqa: BLE001 - counted
            failed[0] += 1
        i += 1


def watchdog() -> None:
    last, since = None, time.time()
    while time.time() < stop + 60:
        time.sleep(2)
        now = (eng.stats.decode_steps, done[0])
        if now != last:
            last, since = now, time.time()
        elif time.time() - since > stall and eng.load["running"]:
            faulthandler.dump_traceback(all_threads=True)
            print(json.dumps({"variant": variant, "hung": True, "after_s": round(time.time() - stop + seconds, 1),
                              "done": done[0], "failed": failed[0], **eng.load}), flush=True)
            os._exit(3)


threading.Thread(target=watchdog, daemon=True).start()
threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
t0 = time.time()
for th in threads:
    th.start()
for th in threads:
    th.join()
print(json.dumps({"variant": variant, "hung": False, "wall_s": round(time.time() - t0, 1), "done": done[0],
                  "failed": failed[0], "decode_steps": eng.stats.decode_steps}), flush=True)
tts.close()
