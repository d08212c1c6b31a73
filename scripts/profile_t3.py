"""Where a T3 decode step's time goes on the GPU: graph replay time, and the kernels of one eager step."""
import sys
import time

import torch

from cadence.sampling_params import SamplingParams
from cadence.tts import TTS

ckpt = sys.argv[1]
tts = TTS.from_dir(ckpt, device="cuda", watermark=False)
voice = tts.default_voice or tts.prepare_voice(__import__("cadence.random_checkpoint", fromlist=["x"]).synthetic_voice(), sample_rate=24000)
p = SamplingParams(max_new_tokens=400, seed=0)
pre = tts.prefill("Hello there, this is a quick test of the reference model.", voice, p)
dec = tts.t3_runner.graph_decoder(2, pre.shape[1] + 400)
dec.generate(pre, p, torch.Generator(device="cuda").manual_seed(0), 400, 16, True)
g = dec.graphs[(dec.buckets[-1], False, False)]
for name, fn in [("graph replay (step, largest bucket)", lambda: g.replay()),
                 ("noise exponential_", lambda: dec.noise.exponential_())]:
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(200):
        fn()
    torch.cuda.synchronize(); print(f"{name}: {(time.perf_counter() - t) / 200 * 1e3:.3f} ms")
dec.pos.fill_(300); dec.step.zero_()
from torch.profiler import ProfilerActivity, profile
with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
    dec._step(dec.buckets[-1], False, False)
    torch.cuda.synchronize()
ev = [e for e in prof.events() if e.device_type.name == "CUDA"]
print("kernels in one eager step:", len(ev), "sum of kernel time (ms):", sum(e.device_time for e in ev) / 1e3)
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18))
