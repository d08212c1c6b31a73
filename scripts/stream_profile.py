"""Where the time of N concurrent streams goes: S3Gen window stages by batch size (with the engine's bounded
window context), CFM solve variants, and the engine's timeline (admission, decode rounds, window renders) for
N streams submitted at once.
Usage: python scripts/stream_profile.py CKPT [N]"""
import json
import sys
import time

import torch

from cadence.engine import audio_worker as aw, engine as en, streaming as sm
from cadence.engine.request import Request
from cadence.engine.rng import RequestRNG
from cadence.sampling_params import SamplingParams
from cadence.tts import TTS
from probe_timing import median_ms

ck, N = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 16
DEV = "cuda" if torch.cuda.is_available() else "cpu"
tts = TTS.from_dir(ck, device=DEV, watermark=False)
sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
tts.engine.warmup(1000)
runner, voice = tts.audio_runner, tts.default_voice
dev = runner.device
report: dict = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "streams": N}


def timed(fn, reps=3):
    return median_ms(fn, sync, reps)


KEEP = dict(zip(("prompt_keep", "history_keep"), tts.config.stream_context_tokens()))  # the engine's bounds


def states(b):
    return [sm.StreamState(voice.to(dev), RequestRNG(i, dev), **KEEP) for i in range(b)]


# 1. window stages by batch size (first window: 16 tokens + 3 lookahead; second: 48 + 3)
g = torch.Generator().manual_seed(0)
toks = torch.randint(0, 6561, (64,), generator=g).tolist()
stages = {}
for b in (1, 4, 8, 16, 32) if DEV == "cuda" else (1, 2):
    def first():
        st = states(b)
        sm._flow_windows(runner, [(s, toks[:19], False) for s in st])
        return st
    flow1 = timed(first)
    st = first()
    voc1 = timed(lambda: sm._vocode_windows(runner, [(s, False) for s in [sm.StreamState(voice, s.rng, mel=s.mel,
                                                                                           **KEEP) for s in st]]))
    flow2 = timed(lambda: sm._flow_windows(runner, [(sm.StreamState(voice, s.rng, mel=s.mel, noise=s.noise, **KEEP),
                                                     toks[:51], False) for s in st]))
    stages[b] = {"flow_first_ms": flow1, "vocode_first_ms": voc1, "flow_second_ms": flow2}
    print("batch", b, stages[b], flush=True)
report["stages"] = stages

# 2. the CFM solve alone, B rows of T frames: eager, graphed, and with a 150-frame prompt
cfm = tts.s3gen.flow.decoder
dt = runner.flow_dtype
solves = {}
for b, T in ((1, 532), (16, 532), (16, 182), (16, 276)) if DEV == "cuda" else ():
    z = lambda: torch.randn(b, 80, T, device=dev, dtype=dt)  # noqa: E731
    x, mu, cond, mask, spks = z(), z(), z(), torch.ones(b, 1, T, device=dev, dtype=dt), torch.randn(b, 80, device=dev, dtype=dt)
    with torch.inference_mode():
        eager = timed(lambda: cfm.solve(x, mu, mask, spks, cond, 10))
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            cfm.solve(x, mu, mask, spks, cond, 10)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            cfm.solve(x, mu, mask, spks, cond, 10)
        graphed = timed(graph.replay)
        del graph
    solves[f"B{b}_T{T}"] = {"eager_ms": eager, "graph_ms": graphed}
    print("solve", b, T, solves[f"B{b}_T{T}"], flush=True)
report["solves"] = solves

# 3. the engine's timeline for N streams submitted at once
log = []
t_zero = [0.0]
orig_windows, orig_render, orig_decode, orig_sched = aw.AudioWorker.windows, aw.AudioWorker._windows, en.Engine._decode, en.Engine._schedule


def stamp(kind, **kw):
    log.append({"t_ms": round((time.perf_counter() - t_zero[0]) * 1e3, 1), "what": kind, **kw})


def windows(self, requests, tokens):
    stamp("windows_queued", n=len(requests), tokens=len(tokens[0]))
    return orig_windows(self, requests, tokens)


def render(self, todo):
    stamp("render_start", n=len(todo), tokens=len(todo[0][1]))
    orig_render(self, todo)
    stamp("render_end", n=len(todo))


def decode(self):
    n = len(self._running)
    orig_decode(self)
    stamp("decode_round", running=n)


def sched(self):
    w = len(self._waiting)
    orig_sched(self)
    if w:
        stamp("schedule", waiting_before=w, running=len(self._running))


aw.AudioWorker.windows, aw.AudioWorker._windows, en.Engine._decode, en.Engine._schedule = windows, render, decode, sched
for rep in range(2):
    log.clear()
    t_zero[0] = time.perf_counter()
    handles = [tts.submit(Request("Streaming probe text for many listeners at once.", voice,
                                  SamplingParams(seed=i, max_new_tokens=250), speech_tokens_only=True,
                                  ignore_eos=True, stream=True)) for i in range(N)]
    for h in handles:
        h.result()
    stamp("all_done")
report["timeline"] = log
print(json.dumps(log), flush=True)
json.dump(report, open(sys.argv[3] if len(sys.argv) > 3 else "/tmp/stream_profile.json", "w"), indent=1)
