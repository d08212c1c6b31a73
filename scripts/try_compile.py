"""Experiment: torch.compile on the Llama layer inside the captured decode step."""
import sys
import time

import torch

from cadence.sampling_params import SamplingParams
from cadence.tts import TTS

ckpt = sys.argv[1]
tts = TTS.from_dir(ckpt, device="cuda", watermark=False, enforce_eager=True)
from cadence.random_checkpoint import synthetic_voice
voice = tts.prepare_voice(synthetic_voice(), sample_rate=24000)
t0 = time.perf_counter()
for layer in tts.t3.tfmr.layers:
    layer.forward = torch.compile(layer.forward, dynamic=True, fullgraph=True)
tts.t3_runner.use_graphs = True
p = SamplingParams(max_new_tokens=400, seed=0)
pre = tts.prefill("Hello there, this is a quick test of the reference model.", voice, p)
dec = tts.t3_runner.graph_decoder(2, pre.shape[1] + 400)
print(f"compile+capture: {time.perf_counter() - t0:.1f} s")
for _ in range(2):
    torch.cuda.synchronize(); t = time.perf_counter()
    toks = dec.generate(pre, p, torch.Generator(device="cuda").manual_seed(0), 400, 16, True)
    torch.cuda.synchronize(); dt = time.perf_counter() - t
    print(f"compiled graph decode: {len(toks) / dt:.0f} tok/s")
