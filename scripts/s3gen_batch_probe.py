"""Where one-piece S3Gen time goes for a batch of finished requests (the server's throughput at 32 clients is
bound by it): flow encoder, CFM solve (eager padded batch vs one graph per request), vocoder; the first call
on new lengths against a repeat (per-shape plans); the estimator's attention under each SDPA backend; and the
GPU kernels of one batch by kind (torch.profiler), for B requests of the bench's lengths.
Usage: python scripts/s3gen_batch_probe.py CKPT [B,B...] [out.json]"""
import json
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from cadence.engine.rng import RequestRNG
from cadence.tts import TTS
from probe_timing import median_ms, recorded

ck = sys.argv[1]
sizes = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "4,8,16").split(",")]
DEV = "cuda" if torch.cuda.is_available() else "cpu"
sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
tts = TTS.from_dir(ck, device=DEV, watermark=False)
tts.engine.warmup(1000)  # the single-request CFM graphs the small-group path replays
runner, voice = tts.audio_runner, tts.default_voice
flow = tts.s3gen.flow
report: dict = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "batches": {}}


def timed(fn, reps=3):
    return median_ms(fn, sync, reps)


def kernel_profile(fn, top: int = 25) -> dict:
    """One call's GPU kernel time by kind, and its `top` kernels (ms, launches)."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    kinds: dict[str, float] = {}
    rows = []
    for e in prof.key_averages():
        ms = e.self_device_time_total / 1e3
        if ms <= 0:
            continue
        n = e.key.lower()
        kind = ("attention" if any(w in n for w in ("fmha", "flash", "attention", "sdpa")) else
                "conv" if "conv" in n or "implicit" in n or "cudnn" in n or "xmma" in n else
                "gemm" if "gemm" in n or "sm90" in n or "cutlass" in n or "nvjet" in n else
                "fft" if "fft" in n else "norm" if "norm" in n else "copy/elementwise")
        kinds[kind] = kinds.get(kind, 0.0) + ms
        rows.append((ms, e.count, e.key[:90]))
    rows.sort(reverse=True)
    return {"by_kind_ms": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "total_ms": round(sum(kinds.values()), 1),
            "top": [{"ms": round(ms, 2), "launches": n, "kernel": k} for ms, n, k in rows[:top]]}


gen = torch.Generator().manual_seed(0)
for B in sizes:
    lengths = torch.randint(75, 751, (B,), generator=gen).tolist()  # the serve bench's max_new_tokens range
    items = [(torch.randint(0, 6561, (n,), generator=gen), voice, RequestRNG(i, DEV)) for i, n in enumerate(lengths)]
    row = {"tokens": lengths, "audio_s": sum(lengths) / 25}
    row["flow_batch_eager_ms"] = timed(lambda: runner.mel_batch(items))
    encode = flow.encode
    spent = []
    flow.encode = recorded(encode, sync, spent)
    runner.mel_batch(items)
    flow.encode = encode
    row["flow_encoder_ms"] = round(spent[0], 1)
    row["flow_one_by_one_graphs_ms"] = timed(lambda: [runner.mel(*it) for it in items])
    mels = runner.mel_batch(items)
    rngs = [it[2] for it in items]
    row["vocoder_batch_ms"] = timed(lambda: runner.vocode_batch(mels, rngs))
    row["synthesize_batch_ms"] = timed(lambda: runner.synthesize_batch(items))
    row["x_realtime_s3gen_only"] = round(row["audio_s"] / (row["synthesize_batch_ms"] / 1e3), 1)
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        def forced():
            with sdpa_kernel([backend]):
                runner.mel_batch(items)
        try:
            row[f"flow_batch_{name}_ms"] = timed(forced)
        except RuntimeError as exc:
            row[f"flow_batch_{name}_ms"] = str(exc)[:120]
    fresh = [(torch.randint(0, 6561, (int(n) + 7,), generator=gen), voice, RequestRNG(i, DEV))
             for i, n in enumerate(lengths)]  # lengths no call has seen: per-shape plans are built now
    row["first_call_new_lengths_ms"] = timed(lambda: runner.synthesize_batch(fresh), reps=1)
    row["repeat_call_ms"] = timed(lambda: runner.synthesize_batch(fresh), reps=1)
    if DEV == "cuda" and B == sizes[-1]:
        row["kernels"] = kernel_profile(lambda: runner.synthesize_batch(items))
    report["batches"][B] = row
    print(B, {k: v for k, v in row.items() if k != "kernels"}, flush=True)
    if "kernels" in row:
        print("kernels", row["kernels"]["total_ms"], row["kernels"]["by_kind_ms"], flush=True)
        for k in row["kernels"]["top"][:12]:
            print("  ", k, flush=True)
json.dump(report, open(sys.argv[3] if len(sys.argv) > 3 else "/tmp/s3gen_batch_probe.json", "w"), indent=1)
