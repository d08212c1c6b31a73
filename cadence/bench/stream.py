"""`cadence bench --stream`: streaming latency and long-text throughput on the batched engine.

Streams: N requests of 10 s submitted at once with `stream=True`; for each, time to first audio, and
underruns: a chunk that arrives after the audio already received (played from the first chunk on) has run
out. Long text: 10,000 words split by the splitter, checked (every word in exactly one chunk, in order; no chunk
over the budget), rendered together; audio seconds per wall second. Token counts are forced (`ignore_eos`):
~10 speech tokens per word (2.5 words/s at 25 tokens/s), since random weights stop anywhere."""

from __future__ import annotations

import json
import random
import threading
import time

import numpy as np
import torch

from ..engine.request import Request
from ..text.split import DEFAULT_MAX_TOKENS, split_text
from .offline import LONG_TEXT, write_report

SENTENCES = ["The committee met on Tuesday to review the plan.", "Dr. Patel said the numbers, 3.5 and 4.25, were "
             "close enough.", "Why would anyone walk twelve miles in the rain?", "\"Because the bridge was out,\" "
             "she replied, laughing.", "By evening the river had risen another foot; the roads were closed.",
             "Nobody expected the old clock to start ticking again, yet at midnight it did."]


def _watch(handle, t_submit: float, out: dict) -> None:
    arrivals, seconds = [], []
    for chunk in handle:
        arrivals.append(time.perf_counter())
        seconds.append(chunk.samples.size / chunk.sample_rate)
    first = next((i for i, s in enumerate(seconds) if s > 0), 0)
    t0 = arrivals[first]
    played = np.cumsum([0.0] + seconds[first:])  # audio received before each chunk
    late = [arrivals[first + k] - (t0 + played[k]) for k in range(1, len(seconds) - first)]
    out.update(ttfa_s=t0 - t_submit, chunks=len(seconds), audio_s=sum(seconds), total_s=arrivals[-1] - t_submit,
               underruns=sum(1 for x in late if x > 0), worst_late_s=max(late, default=0.0),
               first_chunk_s=seconds[first])


def stream_level(tts, voice, n: int, tokens: int, seed: int) -> dict:
    results = [dict() for _ in range(n)]
    threads = []
    t = time.perf_counter()
    for i in range(n):
        h = tts.submit(Request(LONG_TEXT, voice, tts.params(seed=seed + i, max_new_tokens=tokens, language="en"),
                               speech_tokens_only=True, ignore_eos=True, stream=True))
        threads.append(threading.Thread(target=_watch, args=(h, time.perf_counter(), results[i])))
        threads[-1].start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    ttfa = [r["ttfa_s"] for r in results]
    return {"streams": n, "ttfa_p50_s": float(np.median(ttfa)), "ttfa_max_s": max(ttfa),
            "underruns": sum(r["underruns"] for r in results), "worst_late_s": max(r["worst_late_s"] for r in results),
            "chunks_per_stream": float(np.mean([r["chunks"] for r in results])),
            "first_chunk_s": float(np.mean([r["first_chunk_s"] for r in results])),
            "rtf": wall / (sum(r["audio_s"] for r in results) / n), "x_realtime": sum(r["audio_s"] for r in results) / wall}


def long_text(tts, voice, words: int, seed: int) -> dict:
    rnd = random.Random(seed)
    text_words: list[str] = []
    while len(text_words) < words:
        text_words += rnd.choice(SENTENCES).split()
    text = " ".join(text_words[:words])
    if not text.endswith((".", "!", "?")):
        text += "."
    t = time.perf_counter()
    chunks = split_text(text, count=lambda s: len(tts.text_ids(s, "en")), max_tokens=DEFAULT_MAX_TOKENS)
    split_s = time.perf_counter() - t
    sizes = [len(tts.text_ids(c, "en")) for c in chunks]
    intact = " ".join(chunks).split() == text.split()
    t = time.perf_counter()
    handles = [tts.submit(Request(c, voice, tts.params(seed=seed + i, max_new_tokens=min(1000, 10 * len(c.split())),
                                                      language="en"),
                                  speech_tokens_only=True, ignore_eos=True)) for i, c in enumerate(chunks)]
    audio_s = sum(h.result().duration for h in handles)
    wall = time.perf_counter() - t
    return {"words": len(text.split()), "chunks": len(chunks), "every_word_once_in_order": intact,
            "max_chunk_tokens": max(sizes), "budget_tokens": DEFAULT_MAX_TOKENS, "split_s": split_s,
            "audio_s": audio_s, "wall_s": wall, "x_realtime": audio_s / wall}


def run_stream_bench(model: str, device: str, levels=(1, 16), tokens: int = 250, words: int = 10000,
                     out_json: str | None = None, out_md: str | None = None, **options) -> dict:
    """`options`: stream_prompt_s / stream_history_s / stream_windows / first_audio_priority / overlap_audio for the
    engine (default:
    EngineConfig's). Each level runs with those and, side by side in the same process, with first_audio_priority
    flipped, then with overlap_audio flipped (each read by the engine as it runs)."""
    from ..tts import TTS
    tts = TTS.from_dir(model, device=device, watermark=False, **options)
    voice = tts.default_voice
    tts.engine.warmup(1000)
    cfg = tts.config
    res = {"device": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu",
           "plan": tts.plan.name, "stream_tokens": tokens, "streams": []}
    turns = tts.engine.turns
    given = (cfg.first_audio_priority, turns.overlap)
    for priority, overlap in (given, (not given[0], given[1]), (given[0], not given[1])):
        cfg.first_audio_priority, turns.overlap = priority, overlap
        for n in levels:
            stream_level(tts, voice, n, tokens, 0)  # warm-up: lazily captured window shapes, allocator
            row = {"stream_prompt_s": cfg.stream_prompt_s, "stream_history_s": cfg.stream_history_s,
                   "stream_windows": list(cfg.stream_windows), "first_audio_priority": priority,
                   "overlap_audio": overlap,
                   **stream_level(tts, voice, n, tokens, 100 * n)}
            res["streams"].append(row)
            print(json.dumps(row))
    cfg.first_audio_priority, turns.overlap = given
    res["long_text"] = long_text(tts, voice, words, 7)
    print(json.dumps(res["long_text"]))
    tts.close()
    write_report(res, markdown(res), out_json, out_md)
    return res


def markdown(res: dict) -> str:
    windows = {",".join(map(str, s["stream_windows"])) for s in res["streams"] if s.get("stream_windows")}
    ladder = f"; windows (speech tokens) {' / '.join(sorted(windows))}" if windows else ""
    lines = [f"Device: {res['device']}; plan {res['plan']}; each stream {res['stream_tokens'] / 25:.0f} s of audio"
             f"{ladder}.", "",
             "| streaming context (prompt / sent audio) | first-audio priority | S3Gen beside T3 | concurrent streams "
             "| TTFA p50 | TTFA max "
             "| first chunk | chunks per stream | underruns | worst lateness | RTF per stream | aggregate × real time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    sec = lambda s: "all" if s is None else f"{s:g} s"  # noqa: E731
    for s in res["streams"]:
        ctx = f"{sec(s.get('stream_prompt_s'))} / {sec(s.get('stream_history_s'))}"
        prio, overlap = ({True: "on", False: "off"}.get(s.get(k), "–") for k in ("first_audio_priority",
                                                                                  "overlap_audio"))
        lines.append(f"| {ctx} | {prio} | {overlap} | {s['streams']} | **{s['ttfa_p50_s'] * 1e3:.0f} ms** | "
                     f"{s['ttfa_max_s'] * 1e3:.0f} ms | {s['first_chunk_s']:.2f} s | {s['chunks_per_stream']:.1f} | {s['underruns']} | "
                     f"{s['worst_late_s'] * 1e3:.0f} ms | {s['rtf']:.3f} | {s['x_realtime']:.1f} |")
    lt = res["long_text"]
    lines += ["", f"Long text: {lt['words']} words → {lt['chunks']} chunks (largest {lt['max_chunk_tokens']} text tokens, "
                  f"budget {lt['budget_tokens']}; every word once, in order: {lt['every_word_once_in_order']}), "
                  f"{lt['audio_s']:.0f} s of audio in {lt['wall_s']:.1f} s = **{lt['x_realtime']:.1f}× real time**.", ""]
    return "\n".join(lines)
