"""S3Gen over many finished requests at once (GPU), with nothing else on the device: the engine's batched path
(`AudioRunner.synthesize_batch`) with eager or graph-replayed CFM solves and at several batch budgets, against
each request alone (graph CFM, one-row vocoder); time in the flow (encoder + CFM) and in the vocoder, and the
peak allocated memory of each variant. A/B in one process, alternating, after a warm-up of each.
AB=attention: instead, the engine's eager batches with the estimator's attention as Cadence calls it (variable-length
FlashAttention, `cadence.layers.key_padding`), with the key-padding bias and without cuDNN (the memory-efficient
kernel), and with the bias as PyTorch's dispatcher chooses (cuDNN's on Hopper, `attention.CUDNN_ATTENTION`); and graph
batches for reference.
Usage: python scripts/s3gen_batch_ab.py CHECKPOINT_DIR OUT.json [REQUESTS] [ROUNDS]"""

import json
import os
import statistics
import sys
import time

import torch

from cadence.engine.rng import RequestRNG
from cadence.layers import attention, key_padding
from cadence.tts import TTS

DEVICE = os.environ.get("PROBE_DEVICE", "cuda")  # "cpu": a smoke test of the script on a tiny checkpoint


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, sink, key):
    def wrapped(*a, **k):
        sync()
        t = time.perf_counter()
        out = fn(*a, **k)
        sync()
        sink[key] = sink.get(key, 0.0) + time.perf_counter() - t
        return out
    return wrapped


def main(ckpt: str, out: str, n: int = 64, rounds: int = 3) -> None:
    tts = TTS.from_dir(ckpt, device=DEVICE, watermark=False)
    runner = tts.audio_runner
    voice = tts.voice_cache.get(tts.default_voice).voice
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(300, 421, (n,), generator=g).tolist()
    tokens = [torch.randint(0, 6561, (t,), generator=g) for t in lengths]
    audio_s = sum(lengths) / 25
    variants = {
        "eager batches (24k/6k frames)": dict(graphs=False, flow_frames=24000, vocoder_frames=6000),
        "graph batches (24k/6k frames)": dict(graphs=True, flow_frames=24000, vocoder_frames=6000),
        "graph batches (96k/24k frames)": dict(graphs=True, flow_frames=96000, vocoder_frames=24000),
        "eager batches (96k/24k frames)": dict(graphs=False, flow_frames=96000, vocoder_frames=24000),
        "each alone": dict(graphs=True, flow_frames=24000, vocoder_frames=6000, min_batch=10 ** 9),
    }
    if os.environ.get("AB") == "attention":
        eager = dict(graphs=False, flow_frames=24000, vocoder_frames=6000)
        variants = {"eager batches, varlen flash attention": eager,
                    "eager batches, bias, no cuDNN": dict(eager, varlen=False),
                    "eager batches, bias, cuDNN": dict(eager, varlen=False, cudnn_attention=True),
                    "graph batches (24k/6k frames)": dict(eager, graphs=True)}
    stage: dict = {}
    runner.mel_batch = timed(runner.mel_batch, stage, "flow")
    runner.mel = timed(runner.mel, stage, "flow")
    runner.vocode_batch = timed(runner.vocode_batch, stage, "vocoder")
    runner.vocode = timed(runner.vocode, stage, "vocoder")
    res = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "family": tts.family.name, "requests": n, "audio_s": audio_s,
           "variants": {}}

    def run(v):
        runner.graph_batches = v["graphs"]
        attention.CUDNN_ATTENTION = v.get("cudnn_attention", False)
        key_padding.VARLEN_ATTENTION = v.get("varlen", True)
        items = [(t, voice, RequestRNG(i, DEVICE)) for i, t in enumerate(tokens)]
        kw = {k: v[k] for k in ("flow_frames", "vocoder_frames", "min_batch") if k in v}
        stage.clear()
        sync()
        t = time.perf_counter()
        waves = runner.synthesize_batch(items, **kw)
        sync()
        return time.perf_counter() - t, dict(stage), waves
    warm = {name: run(v)[2] for name, v in variants.items()}  # warm-up: graphs captured, cuDNN plans built

    def snr_db(a, b):  # the waveforms of two runs (same noise), all requests end to end
        a, b = (torch.cat([w.flatten().float() for w in ws]) for ws in (a, b))
        return round((10 * torch.log10(a.square().sum() / (a - b).square().sum().clamp_min(1e-30))).item(), 1)
    names = list(warm)  # each pair of variants: the kernels' difference
    res["wave_snr_db"] = {f"{a} | {b}": snr_db(warm[a], warm[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    last: dict = {}
    for name, v in variants.items():
        res["variants"][name] = {"total_s": [], "flow_s": [], "vocoder_s": []}
    for _ in range(rounds):
        for name, v in variants.items():
            if DEVICE == "cuda":
                torch.cuda.reset_peak_memory_stats()
            total, st, last[name] = run(v)
            r = res["variants"][name]
            r["total_s"].append(total)
            r["flow_s"].append(st.get("flow", 0.0))
            r["vocoder_s"].append(st.get("vocoder", 0.0))
            r["peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20 if DEVICE == "cuda" else 0.0
    # each variant against itself (identical runs reach the clamp's ceiling)
    res["wave_snr_db_rerun"] = {name: snr_db(warm[name], last[name]) for name in names}
    print("wave SNR between variants", res["wave_snr_db"], "\neach against its own rerun", res["wave_snr_db_rerun"],
          flush=True)
    for name, r in res["variants"].items():
        r["x_realtime"] = audio_s / statistics.median(r["total_s"])
        print(f"{name:34s} total {statistics.median(r['total_s']):.3f} s  flow {statistics.median(r['flow_s']):.3f}  "
              f"vocoder {statistics.median(r['vocoder_s']):.3f}  {r['x_realtime']:.0f}x real time  "
              f"peak {r['peak_mb']:.0f} MB", flush=True)
    json.dump(res, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
