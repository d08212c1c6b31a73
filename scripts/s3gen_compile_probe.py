"""What regional torch.compile (Inductor fuses each repeated block's elementwise and norm kernels; the block is
compiled once and reused by every instance) would give the one-piece throughput: S3Gen's vocoder (Snake, then
ResBlock), the CFM estimator's blocks, and T3's decoder layer inside the captured decode step, each against
eager: compile seconds, warm time, difference from eager on identical inputs (same seeds).
Usage: python scripts/s3gen_compile_probe.py CKPT [out.json]"""
import json
import sys
import time

import torch

from cadence.engine.batch_t3 import BatchDecoder
from cadence.engine.rng import RequestRNG
from cadence.models.s3gen.estimator import CausalBlock, CausalResnetBlock, TransformerBlock
from cadence.models.s3gen.hift import ResBlock, Snake
from cadence.models.t3 import LlamaLayer
from cadence.tts import TTS
from probe_timing import median_ms, replay_ms

sync = torch.cuda.synchronize
tts = TTS.from_dir(sys.argv[1], device="cuda", watermark=False)
runner, voice = tts.audio_runner, tts.default_voice
report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}


def items():  # fresh generators each call: the same noise every time
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(75, 751, (16,), generator=gen).tolist()
    return [(torch.randint(0, 6561, (n,), generator=gen), voice, RequestRNG(i, "cuda")) for i, n in enumerate(lengths)]


def rel(a: list, b: list) -> float:
    return round(max(float((x - y).norm() / y.norm()) for x, y in zip(a, b)), 6)


def compile_all(kinds) -> int:
    n = 0
    for m in list(tts.s3gen.modules()) + list(tts.t3.modules()):
        if isinstance(m, kinds):
            m.compile(dynamic=True)
            n += 1
    return n


def flow():
    return runner.mel_batch(items())


mels = flow()
rngs = lambda: [RequestRNG(100 + i, "cuda") for i in range(len(mels))]  # noqa: E731
vocode = lambda: runner.vocode_batch(mels, rngs())  # noqa: E731
ref_mel, ref_wav = flow(), vocode()
rows = {"eager": {"flow_ms": median_ms(flow, sync), "vocoder_ms": median_ms(vocode, sync)}}
print("eager", rows["eager"], flush=True)

dec = BatchDecoder(tts.t3, 32, tts.config.kv_slot_len, True)


def step_ms(b: int, A: int) -> float:
    return replay_ms(dec._graph((b, A, False, False)))


def one_step() -> torch.Tensor:
    torch.manual_seed(0)
    dec.hidden.normal_()
    dec.pos.fill_(600)
    dec._step(32, 1024, False, False)  # eager call of the step (compiled layers inside when compiled)
    return dec.hidden.clone()


ref_hidden = one_step()
rows["eager"]["t3_step_b32_A1024_ms"] = step_ms(32, 1024)
rows["eager"]["t3_step_b16_A1024_ms"] = step_ms(16, 1024)
dec.graphs.clear()
print("eager", rows["eager"], flush=True)

for name, kinds, what in (("snake", (Snake,), "vocoder"), ("resblock", (ResBlock,), "vocoder"),
                          ("estimator_blocks", (TransformerBlock, CausalResnetBlock, CausalBlock), "flow"),
                          ("t3_layer", (LlamaLayer,), "t3")):
    r = {"modules": compile_all(kinds)}
    t0 = time.perf_counter()
    try:
        if what == "vocoder":
            out = vocode()
            sync()
            r["compile_s"] = round(time.perf_counter() - t0, 1)
            r["vocoder_ms"], r["rel_diff"] = median_ms(vocode, sync), rel(vocode(), ref_wav)
        elif what == "flow":
            out = flow()
            sync()
            r["compile_s"] = round(time.perf_counter() - t0, 1)
            r["flow_ms"], r["rel_diff"] = median_ms(flow, sync), rel(flow(), ref_mel)
        else:
            h = one_step()
            sync()
            r["compile_s"] = round(time.perf_counter() - t0, 1)
            r["rel_diff"] = round(float((h - ref_hidden).norm() / ref_hidden.norm()), 6)
            r["t3_step_b32_A1024_ms"] = step_ms(32, 1024)
            r["t3_step_b16_A1024_ms"] = step_ms(16, 1024)
            r["t3_step_b32_A512_ms"] = step_ms(32, 512)
            r["recapture_s"] = round(time.perf_counter() - t0 - r["compile_s"], 1)
    except Exception as exc:  # noqa: BLE001 - a failing variant is a finding
        r["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    rows[name] = r
    print(name, r, flush=True)
report["variants"] = rows
json.dump(report, open(sys.argv[2] if len(sys.argv) > 2 else "/tmp/s3gen_compile_probe.json", "w"), indent=1)
