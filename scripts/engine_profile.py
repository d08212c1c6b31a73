"""Where the batched engine's time goes under closed-loop load (GPU): the engine-only replay of `engine_ab.py`
(CLIENTS client threads, REQUESTS requests of TOKENS forced tokens) with the watermark in worker processes, in
threads of the engine's process, and off, each finished-
request S3Gen batch logged (rows, tokens, wall and the audio thread's CPU seconds: a thread whose CPU time is close to
its wall time is launching kernels, not waiting for them), then one level under the CUDA profiler: each stream's
kernel time and the time the GPU ran any kernel at all.
Usage: python scripts/engine_profile.py CHECKPOINT_DIR OUT.json [CLIENTS] [REQUESTS] [TOKENS]"""

import json
import sys
import time

import torch

from cadence.bench.engine_replay import engine_level
from cadence.bench.serve import level_bodies
from cadence.engine.audio_worker import AudioWorker
from cadence.engine.postprocess import Postprocess
from cadence.tts import TTS

BATCHES: list[dict] = []


def logged(batch):
    def run(self, live):
        t0, c0 = time.perf_counter(), time.thread_time()
        batch(self, live)
        BATCHES.append({"t": t0, "rows": len(live), "tokens": sum(len(r.tokens) for r in live),
                        "wall_s": time.perf_counter() - t0, "cpu_s": time.thread_time() - c0})
    return run


def use_postprocess(tts, processes: bool) -> None:
    """Swap the idle engine's postprocess lanes for ones that watermark in worker processes or in threads."""
    eng = tts.engine
    eng.post.shutdown()
    Postprocess.worker_processes = processes
    eng.post = Postprocess(eng)
    if not all(w.wait_ready(120) for w in eng.post.workers):
        raise RuntimeError("a watermark worker did not load Perth")


def level(tts, bodies, clients, watermark, variant=""):
    BATCHES.clear()
    lv = engine_level(tts, bodies, clients, watermark)
    lv["s3gen_batches"] = list(BATCHES)
    wall = sum(b["wall_s"] for b in BATCHES)
    cpu = sum(b["cpu_s"] for b in BATCHES)
    e = lv["engine"]
    lv["variant"] = variant
    print(f"{variant:8s} {lv['x_realtime']:6.1f}x  wall {lv['wall_s']:.2f} s  mean batch {e['mean_batch']:.1f}  "
          f"t3 {e['t3_busy_s']:.2f} s  prefill {e['prefill_busy_s']:.2f} s  s3gen batches {len(BATCHES)} wall {wall:.2f} s "
          f"cpu {cpu:.2f} s  rows {[b['rows'] for b in BATCHES]}", flush=True)
    return lv


def gpu_busy(prof) -> dict:
    """Kernel time per CUDA stream and the union of all kernels' intervals (ms) from a finished profiler."""
    spans, per_stream = [], {}
    for ev in prof.profiler.kineto_results.events():
        if ev.device_type() != torch.autograd.DeviceType.CUDA or "memcpy" in ev.name().lower() \
                or "memset" in ev.name().lower():
            continue
        s, d = ev.start_ns(), ev.duration_ns()
        spans.append((s, s + d))
        key = str(ev.device_resource_id())
        per_stream[key] = per_stream.get(key, 0) + d
    spans.sort()
    union, end = 0, None
    for s, e in spans:
        if end is None or s > end:
            union += e - s
            end = e
        elif e > end:
            union += e - end
            end = e
    first = spans[0][0] if spans else 0
    return {"kernels": len(spans), "span_ms": ((end or 0) - first) / 1e6, "union_ms": union / 1e6,
            "per_stream_ms": {k: v / 1e6 for k, v in sorted(per_stream.items(), key=lambda kv: -kv[1])}}


def main(ckpt: str, out: str, clients: int = 64, requests: int = 128, tokens: int = 300) -> None:
    AudioWorker._batch = logged(AudioWorker._batch)
    tts = TTS.from_dir(ckpt, device="cuda", watermark=True)
    tts.engine.warmup()
    bodies = level_bodies(requests, 1, tokens, False, "pcm", tokens)
    res = {"clients": clients, "requests": requests, "tokens": tokens, "family": tts.family.name, "runs": []}
    engine_level(tts, bodies[:clients], clients, True)  # warm: the first full admission's allocations
    for r in range(2):
        for variant, wm, processes in (("workers", True, True), ("threads", True, False), ("off", False, False)):
            use_postprocess(tts, processes)
            res["runs"].append({"watermark": wm, "round": r, **level(tts, bodies, clients, wm, variant)})
    use_postprocess(tts, True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        lv = level(tts, bodies[:clients], clients, True, "workers")
    busy = gpu_busy(prof)
    print(f"profiled level: wall {lv['wall_s']:.2f} s, GPU busy {busy['union_ms']:.0f} ms of a {busy['span_ms']:.0f} ms "
          f"span, {busy['kernels']} kernels, per stream {busy['per_stream_ms']}", flush=True)
    res["profiled"] = {**lv, "gpu": busy}
    json.dump(res, open(out, "w"), indent=1)
    tts.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
