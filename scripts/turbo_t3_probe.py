"""Where Turbo's single-stream T3 step goes (GPU): ms per decode step through the captured graph with Turbo's
default filters (top_k 1000, top_p 0.95) and with none, and a kernel profile of eager decode steps by kernel.
Usage: python scripts/turbo_t3_probe.py CHECKPOINT_DIR OUT.json"""

import json
import sys
import time

import torch

from cadence.sampling_params import SamplingParams
from cadence.tts import TTS

STEPS = 300


def main(ckpt: str, out: str) -> None:
    tts = TTS.from_dir(ckpt, device="cuda", watermark=False)
    voice = tts.default_voice
    res = {"device": torch.cuda.get_device_name(), "steps": STEPS}
    for name, knobs in (("turbo_defaults", {}), ("no_filters", {"top_k": 0, "top_p": 1.0})):
        p = SamplingParams.for_family(tts.family, max_new_tokens=STEPS, seed=1, **knobs)
        prefill = tts.prefill("Hello there, this is a quick test of the reference model.", voice, p)
        gen = torch.Generator(device="cuda").manual_seed(1)
        tts.t3_runner.generate(prefill, p, gen, speech_only=True)  # capture
        torch.cuda.synchronize()
        t = time.perf_counter()
        n = len(tts.t3_runner.generate(prefill, p, gen, speech_only=True).tokens)
        torch.cuda.synchronize()
        res[name] = {"ms_per_step": 1000 * (time.perf_counter() - t) / n, "tokens": n}
        print(name, res[name], flush=True)
    # Kernel time by kernel, eager steps (the graph replays the same kernels without launch gaps).
    p = SamplingParams.for_family(tts.family, max_new_tokens=40, seed=1)
    prefill = tts.prefill("Hello there.", voice, p)
    tts.t3_runner.use_graphs = False
    gen = torch.Generator(device="cuda").manual_seed(1)
    tts.t3_runner.generate(prefill, p, gen, speech_only=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        n = len(tts.t3_runner.generate(prefill, p, gen, speech_only=True).tokens)
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if us > 0:
            rows.append({"kernel": e.key[:90], "us_per_step": us / n, "calls_per_step": e.count / n})
    rows.sort(key=lambda r: -r["us_per_step"])
    res["eager_kernels"] = {"total_us_per_step": sum(r["us_per_step"] for r in rows),
                            "kernels_per_step": sum(r["calls_per_step"] for r in rows), "top": rows[:25]}
    print(json.dumps(res["eager_kernels"], indent=1)[:6000], flush=True)
    json.dump(res, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
