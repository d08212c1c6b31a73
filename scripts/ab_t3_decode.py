"""A/B in one process, single-request T3 decode (CUDA graphs, bf16) on a checkpoint: the fused rotary + KV write
(`cadence.layers.rotary_kv`) on and off with the fused Llama decode linears (`cadence.layers.llama_decode`) on,
and for the multilingual model its end-of-speech taps on and off. 750 forced speech tokens, 3 runs per variant after a warm-up, in the order A B A B. Also the largest relative
difference of the guided logits between fused and eager over 40 teacher-forced steps.
Usage: python scripts/ab_t3_decode.py CHECKPOINT OUT.json"""
import json
import sys
import time

import torch
from torch import nn

import cadence.layers.llama_decode as llama_decode
import cadence.layers.rotary_kv as rotary_kv
from cadence.bench.offline import LONG_TEXT
from cadence.engine.alignment_guard import attach_query_taps
from cadence.tts import TTS

tts = TTS.from_dir(sys.argv[1], device="cuda", watermark=False)
voice = tts.voice_or_default(None)
applies, rotary_applies = llama_decode.applies, rotary_kv.applies
p = tts.params(seed=1, language="en", max_new_tokens=750, **({"alignment_stop": False}
                                                           if "alignment_stop" in tts.family.defaults else {}))
prefill = tts.prefill(LONG_TEXT, voice, p)
out = {"family": tts.family.name, "device": torch.cuda.get_device_name(), "torch": torch.__version__}


def variant(fused: bool, taps: bool):
    """fused: the rotary + KV write kernel (the linears are fused in both variants)."""
    llama_decode.applies = applies
    rotary_kv.applies = rotary_applies if fused else (lambda *a: False)
    for layer in tts.t3.tfmr.layers:
        layer.self_attn.query_tap = nn.Identity()
    if taps:
        attach_query_taps(tts.t3, tts.family.aligned_heads)
    tts.t3_runner.release()


def rate(fused: bool, taps: bool) -> list[float]:
    variant(fused, taps)
    tts.t3_runner.generate(prefill, p, 1, speech_only=True)
    rates = []
    for i in range(3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        r = tts.t3_runner.generate(prefill, p, i, speech_only=True)
        torch.cuda.synchronize()
        rates.append(len(r.tokens) / (time.perf_counter() - t))
    return rates


taps = bool(tts.family.aligned_heads)
for rnd in range(2):
    for fused in (False, True):
        key = f"{'fused_rotary' if fused else 'eager_rotary'}{'_taps' if taps else ''}"
        out.setdefault(key, []).extend(rate(fused, taps))
        print(key, [round(x) for x in out[key]], flush=True)
if taps:
    out["fused_no_taps"] = rate(True, False)
    print("fused_no_taps", [round(x) for x in out["fused_no_taps"]], flush=True)
forced = torch.randint(0, 6561, (40,), generator=torch.Generator().manual_seed(0)).tolist()
logs = {}
for fused in (False, True):
    variant(fused, taps)
    logs[fused] = tts.t3_runner.generate(prefill, p, 0, forced_tokens=forced, keep_logits=True).guided
out["fused_vs_eager_max_rel"] = max(float((a - b).norm() / b.norm()) for a, b in zip(logs[True], logs[False]))
print("fused vs eager rotary, logits, max relative difference:", out["fused_vs_eager_max_rel"], flush=True)
json.dump(out, open(sys.argv[2], "w"), indent=1)
