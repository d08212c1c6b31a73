"""A/B: the two token prompts in one batched tokenizer pass vs two passes (warm medians)."""
import statistics
import sys
import time

import torch

from cadence.random_checkpoint import synthetic_voice
from cadence.tts import TTS

tts = TTS.from_dir(sys.argv[1], device="cuda", watermark=False, prepare_device="cuda")
tok = tts.s3gen.tokenizer
wav = torch.from_numpy(synthetic_voice(seconds=9.98)).cuda()
ref16 = wav[None, :160000]
t3 = wav[None, :96000]


def timed(fn):
    out = []
    for _ in range(12):
        torch.cuda.synchronize(); t = time.perf_counter(); fn(); torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out[2:]) * 1e3


print(f"batched: {timed(lambda: tok.tokenize([ref16, t3], [None, 150])):.1f} ms")
print(f"two passes: {timed(lambda: (tok.tokenize([ref16], [None]), tok.tokenize([t3], [150]))):.1f} ms")
print(f"whole prepare (resident): {timed(lambda: tts.prepare_voice(synthetic_voice(seconds=9.98), sample_rate=24000)):.1f} ms")
