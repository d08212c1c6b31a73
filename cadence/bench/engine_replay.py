"""The serve bench's levels replayed on the batched engine itself, in this process: the same request bodies, the
same number of clients each sending its requests one after another, no HTTP and no encoding. Beside the HTTP
figures it says what the server's layer costs."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict

from ..engine.request import Request
from ..sampling_params import SamplingParams


def engine_level(tts, bodies: list[dict], concurrency: int, watermark: bool, ignore_eos: bool = False) -> dict:
    """x real time of `bodies` (speech request bodies) through `tts.submit` from `concurrency` client threads, and
    the requests' latencies; `ignore_eos`: every request runs to its `max_new_tokens` (random weights)."""
    todo = list(reversed(bodies))
    lock = threading.Lock()
    audio, latencies, first_audio = [], [], []

    def client():
        while True:
            with lock:
                if not todo:
                    return
                body = todo.pop()
            params = SamplingParams.for_family(tts.family, seed=body["seed"], max_new_tokens=body["max_new_tokens"],
                                               language=body.get("language"))
            t0 = time.perf_counter()
            handle = tts.submit(Request(body["input"], None, params, watermark=watermark, stream=body["stream"],
                                        ignore_eos=ignore_eos))
            seconds, first = 0.0, None
            for chunk in handle:
                first = first or time.perf_counter() - t0
                seconds += chunk.samples.size / chunk.sample_rate
            with lock:
                audio.append(seconds)
                latencies.append(time.perf_counter() - t0)
                first_audio.append(first or latencies[-1])
    before = asdict(tts.engine.stats)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    d = {k: v - before[k] for k, v in asdict(tts.engine.stats).items()}
    # the same counters, under the same names, as the serve bench reads from /metrics for the HTTP run
    engine = {"prefill_busy_s": d["prefill_s"], "t3_busy_s": d["t3_s"], "s3gen_busy_s": d["s3gen_s"],
              "decode_steps": d["decode_steps"], "request_steps": d["slot_steps"],
              "mean_batch": d["slot_steps"] / d["decode_steps"] if d["decode_steps"] else 0.0}
    return {"concurrency": concurrency, "stream": bodies[0]["stream"] if bodies else True, "requests": len(bodies),
            "audio_s": sum(audio), "wall_s": wall, "x_realtime": sum(audio) / wall, "engine": engine,
            "latency_p50_s": statistics.median(latencies) if latencies else 0.0,
            "latency_max_s": max(latencies, default=0.0),
            "ttfa_p50_s": statistics.median(first_audio) if first_audio else 0.0}


def replay(model: str, device: str, levels: list[tuple[int, list[dict]]], watermark: bool,
           watermark_device: str | None = None, engine_options: dict | None = None) -> list[dict]:
    """Each (concurrency, bodies) level on a freshly loaded engine (warmed up as the server is; its watermark on
    `watermark_device`, None: the engine's default; `engine_options`: more `EngineConfig` fields, as the server
    was given them)."""
    from ..tts import TTS
    options = {"watermark_device": watermark_device} if watermark_device else {}
    options.update(engine_options or {})
    tts = TTS.from_dir(model, device=device, watermark=watermark, **options)
    try:
        tts.engine.warmup()
        return [engine_level(tts, bodies, c, watermark) for c, bodies in levels]
    finally:
        tts.close()
