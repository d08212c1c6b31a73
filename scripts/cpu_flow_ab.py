"""The CPU plan's S3Gen measures, A/B in one process: the loaded plan (`auto`: `cpu-bf16` on a CPU with native bf16)
against the same model with one measure at a time taken back — the estimator's rows side by side, the softmax in
place, the vocoder's bf16 convolutions — or, in a bf16 flow, one left out added: the transformer stacks in fp32;
alternating variant by variant, each round starting one variant later. Per variant: the flow's and the vocoder's
seconds (medians) and the waveform's SNR against the plan's own.

    python scripts/cpu_flow_ab.py CKPT OUT.json [TOKENS] [ROUNDS] [VOICE_SECONDS]"""
import json
import statistics
import sys
import time

import torch

from cadence.engine.rng import RequestRNG
from cadence.layers import blocked_attention
from cadence.memory.cpu_int8 import place_transformer_stacks_
from cadence.memory.placement import place
from cadence.random_checkpoint import synthetic_voice
from cadence.tts import TTS

ckpt, out_path = sys.argv[1], sys.argv[2]
tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 50
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 4
voice_s = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0

tts = TTS.from_dir(ckpt, device="cpu", watermark=False)
plan = tts.plan
voice = tts.prepare_voice(synthetic_voice(seconds=voice_s), sample_rate=24000)
speech = torch.randint(0, 6561, (tokens,), generator=torch.Generator().manual_seed(0))
runner, flow, hift = tts.audio_runner, tts.s3gen.flow, tts.s3gen.mel2wav
estimator = flow.decoder.estimator
side_by_side = vars(estimator).get("forward")


def vocoder_in(dtype):
    place(hift, tts.device, dtype)
    for part in (hift.f0_predictor, hift.m_source):  # fp32 in every plan
        place(part, tts.device, torch.float32)


FP32_STACKS = "with fp32 transformer stacks"


def configure(variant: str):
    """The plan as loaded, with the measure `variant` names taken back (or, for `FP32_STACKS`, added)."""
    if side_by_side is not None:
        if variant == "rows side by side":
            vars(estimator).pop("forward", None)
        else:
            estimator.forward = side_by_side
    if plan.flow_dtype != torch.float32:
        place_transformer_stacks_(flow, torch.float32 if variant == FP32_STACKS else plan.flow_dtype)
    blocked_attention.SOFTMAX_IN_PLACE = variant != "softmax in place"
    vocoder_in(torch.float32 if variant == "bf16 vocoder" else plan.vocoder_dtype)


variants = ["plan"]
if side_by_side is not None:
    variants.append("rows side by side")
if plan.flow_dtype != torch.float32:
    variants.append(FP32_STACKS)
if plan.blocked_attention:
    variants.append("softmax in place")
if plan.vocoder_dtype != torch.float32:
    variants.append("bf16 vocoder")

times = {v: {"flow_s": [], "vocoder_s": []} for v in variants}
waves = {}
for r in range(rounds + 1):  # round 0 warms every variant up; each round starts one variant later
    for v in variants[r % len(variants):] + variants[:r % len(variants)]:
        configure(v)
        t = time.perf_counter()
        mel = runner.mel(speech, voice, RequestRNG(1, tts.device))
        t_flow = time.perf_counter() - t
        t = time.perf_counter()
        waves[v] = runner.vocode(mel, RequestRNG(1, tts.device))
        t_voc = time.perf_counter() - t
        if r:
            times[v]["flow_s"].append(t_flow)
            times[v]["vocoder_s"].append(t_voc)
configure("plan")


def snr_db(ref, x):
    return 10 * torch.log10(ref.pow(2).sum() / (x - ref).pow(2).sum().clamp(min=1e-30)).item()


rows = []
for v in variants:
    flow_s, voc_s = statistics.median(times[v]["flow_s"]), statistics.median(times[v]["vocoder_s"])
    rows.append({"variant": v if v in ("plan", FP32_STACKS) else f"without {v}", "flow_s": flow_s,
                 "vocoder_s": voc_s, "s3gen_s": flow_s + voc_s, "runs": times[v],
                 "wave_snr_db_vs_plan": snr_db(waves["plan"], waves[v])})
    print(f"{rows[-1]['variant']:34s} flow {flow_s:.3f} s  vocoder {voc_s:.3f} s  S3Gen {flow_s + voc_s:.3f} s  "
          f"SNR vs plan {rows[-1]['wave_snr_db_vs_plan']:.1f} dB", flush=True)
with open(out_path, "w") as f:
    json.dump({"plan": plan.name, "threads": torch.get_num_threads(), "tokens": tokens, "voice_s": voice_s,
               "rounds": rounds, "frames": 2 * (tokens + voice.prompt_tokens.shape[1]), "variants": rows}, f, indent=1)
