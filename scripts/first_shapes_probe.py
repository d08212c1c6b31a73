"""What S3Gen's first call on a new batch shape costs (GPU): load a checkpoint as `cadence serve` does, then run the
engine's batched one-piece path (`AudioRunner.synthesize_batch`: padded flow batch, padded vocoder batch) on ROWS
requests of TOKENS speech tokens, twice on the same shape and then on shapes not seen yet (one row fewer; a few
tokens more), timing the flow and the vocoder apart. The first call on each shape is profiled (torch.profiler, CPU
side): the ops whose self time grows on a first call say what a new shape pays for (cuDNN's plans, cuBLAS's
heuristics, allocator growth). Before that, single requests through `TTS.generate` (the first one's prefill and
S3Gen meet their shapes for the first time; then T3's tokens/s, median of 3).
CUDNN_ATTENTION=1 lets PyTorch's dispatcher pick cuDNN's attention (`cadence.layers.attention.CUDNN_ATTENTION`):
the A/B, one process per variant.
Usage: python scripts/first_shapes_probe.py CHECKPOINT_DIR OUT.json [ROWS] [TOKENS]"""

import json
import os
import statistics
import sys
import time

import torch

from cadence.engine.rng import RequestRNG
from cadence.layers import attention
from cadence.tts import TTS


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def main() -> None:
    ck, out_path = sys.argv[1], sys.argv[2]
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    device = "cuda" if torch.cuda.is_available() else "cpu"
    attention.CUDNN_ATTENTION = os.environ.get("CUDNN_ATTENTION") == "1"
    t0 = time.perf_counter()
    tts = TTS.from_dir(ck, device=device, watermark=False)
    load_s = time.perf_counter() - t0
    single = []
    for i in range(4):
        audio, total_s = timed(lambda: tts.generate("A single request, one sentence of plain text to say.", seed=i,
                                                    max_new_tokens=tokens, speech_tokens_only=True))
        single.append({"total_s": round(total_s, 4), "tokens": len(audio.tokens),
                       **{k: round(v, 4) for k, v in audio.timings.items()}})
        print(json.dumps(single[-1]), flush=True)
    runner, voice = tts.audio_runner, tts.default_voice
    gen = torch.Generator().manual_seed(0)

    def items(n: int, length: int):
        return [(torch.randint(0, 6561, (length,), generator=gen), voice, RequestRNG(i, device)) for i in range(n)]

    def one(n: int, length: int, profile: bool) -> dict:
        batch = items(n, length)
        if profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                mels, flow_s = timed(lambda: runner.mel_batch(batch))
                _, voc_s = timed(lambda: runner.vocode_batch(mels, [b[2] for b in batch]))
            top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
            ops = [{"op": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1)} for e in top]
        else:
            mels, flow_s = timed(lambda: runner.mel_batch(batch))
            _, voc_s = timed(lambda: runner.vocode_batch(mels, [b[2] for b in batch]))
            ops = None
        row = {"rows": n, "tokens": length, "flow_s": round(flow_s, 4), "vocoder_s": round(voc_s, 4)}
        if ops:
            row["top_ops"] = ops
        print(json.dumps({k: v for k, v in row.items() if k != "top_ops"}), flush=True)
        return row

    runs = []
    for label, n, length in (("first", rows, tokens), ("again", rows, tokens), ("again", rows, tokens),
                             ("one row fewer, first", rows - 1, tokens), ("one row fewer, again", rows - 1, tokens),
                             ("32 tokens more, first", rows, tokens + 32), ("32 tokens more, again", rows, tokens + 32)):
        runs.append({"label": label, **one(n, length, profile="first" in label)})
    with open(out_path, "w") as f:
        json.dump({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
                   "cudnn": torch.backends.cudnn.version(), "cudnn_attention": attention.CUDNN_ATTENTION,
                   "load_s": round(load_s, 3), "single": single,
                   "t3_tokens_per_s_median": statistics.median(r["t3_tokens_per_s"] for r in single[1:]),
                   "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
