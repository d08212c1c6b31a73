"""A/B in one process, single-request T3 decode (CUDA graphs, bf16, the fused linears and rotary/KV kernel on) on a
multilingual checkpoint: its end-of-speech rules as eager tensor math, as the two Triton kernels
(`cadence.layers.alignment_kernels`), and without the taps (what the rules cost). 750 forced speech tokens
(the rules run every step; their decisions are not applied: random weights would stop at once), 3 runs per
variant after a warm-up, in the order A B A B, then C. Also whether eager and kernel rules draw the same tokens
with the rules applied (same seed). Usage: python scripts/ab_t3_decode.py CHECKPOINT OUT.json"""
import json
import sys
import time

import torch
from torch import nn

import cadence.layers.alignment_kernels as alignment_kernels
from cadence.bench.offline import LONG_TEXT
from cadence.engine.alignment_guard import attach_query_taps
from cadence.tts import TTS

tts = TTS.from_dir(sys.argv[1], device="cuda", watermark=False)
voice = tts.voice_or_default(None)
applies = alignment_kernels.applies
p = tts.params(seed=1, language="en", max_new_tokens=750, alignment_stop=False)
prefill = tts.prefill(LONG_TEXT, voice, p)
out = {"family": tts.family.name, "device": torch.cuda.get_device_name(), "torch": torch.__version__}


def variant(kernels: bool, taps: bool = True):
    alignment_kernels.applies = applies if kernels else (lambda *a: False)
    for layer in tts.t3.tfmr.layers:
        layer.self_attn.query_tap = nn.Identity()
    if taps:
        attach_query_taps(tts.t3, tts.family.aligned_heads)
    tts.t3_runner.release()


def rate(kernels: bool, taps: bool = True) -> list[float]:
    variant(kernels, taps)
    tts.t3_runner.generate(prefill, p, 1, speech_only=True)
    rates = []
    for i in range(3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        r = tts.t3_runner.generate(prefill, p, i, speech_only=True)
        torch.cuda.synchronize()
        rates.append(len(r.tokens) / (time.perf_counter() - t))
    return rates


for rnd in range(2):
    for kernels in (False, True):
        key = "rules_kernels" if kernels else "rules_eager"
        out.setdefault(key, []).extend(rate(kernels))
        print(key, [round(x) for x in out[key]], flush=True)
out["no_taps"] = rate(True, False)
print("no_taps", [round(x) for x in out["no_taps"]], flush=True)
applied = tts.params(seed=3, language="en", max_new_tokens=200, temperature=0.05, repetition_penalty=1.0)
drawn = {}
for kernels in (False, True):
    variant(kernels)
    drawn[kernels] = tts.t3_runner.generate(tts.prefill(LONG_TEXT, voice, applied), applied, 3).tokens
out["same_tokens_rules_applied"] = drawn[True] == drawn[False]
out["tokens_rules_applied"] = len(drawn[True])
print("rules applied: same tokens", out["same_tokens_rules_applied"], len(drawn[True]), len(drawn[False]), flush=True)
json.dump(out, open(sys.argv[2], "w"), indent=1)
