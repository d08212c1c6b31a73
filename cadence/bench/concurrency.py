"""`cadence bench --concurrency 1,4,16,32,64`: the batched engine under N simultaneous requests.

Each level submits N requests at once: mixed lengths (3-30 s of audio, forced with ignore_eos since random
weights stop anywhere), random voices from a small library, their own seeds. Reported per level: aggregate
audio seconds per wall second, request latency p50/p99, T3 batch occupancy, and how the engine's time splits
between T3 and S3Gen. Also: 32 requests of 30 s each (the issue's target case), the latency of one request
inside a busy batch of 16 against the same request alone, and how often batched tokens equal the single-request
path's on this device."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import torch

from ..engine.request import Request
from ..random_checkpoint import synthetic_voice
from .offline import LONG_TEXT, _mem, _reset_peak, _sync, write_report

TOKENS_PER_S = 25


def _percentile(values, q):
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0


def _fit(tts, n: int) -> int:
    """`n` tokens, or fewer where the loaded model or the engine's slots hold fewer (a small checkpoint)."""
    eng = tts.engine
    room = eng.slot_len - eng.prefill_len(len(tts.text_ids(LONG_TEXT, "en"))) - tts.config.eos_check_every
    return max(1, min(n, tts.t3.cfg.max_speech_tokens, room))


def _run_level(tts, voices, lengths, seed) -> dict:
    eng = tts.engine
    lengths = [_fit(tts, n) for n in lengths]
    s0 = dict(vars(eng.stats))
    rnd = random.Random(seed)
    _sync(tts.device)
    t0 = time.perf_counter()
    handles = [eng.submit(Request(LONG_TEXT, rnd.choice(voices),
                                  tts.params(seed=seed + i, max_new_tokens=n, language="en"),
                                  speech_tokens_only=True, ignore_eos=True))
               for i, n in enumerate(lengths)]
    audios = [h.result() for h in handles]
    wall = time.perf_counter() - t0
    s1 = vars(eng.stats)
    d = {k: s1[k] - s0[k] for k in s0}
    audio_s = sum(a.duration for a in audios)
    lat = [a.timings["total"] for a in audios]
    return {"n": len(lengths), "wall_s": wall, "audio_s": audio_s, "x_realtime": audio_s / wall,
            "latency_p50_s": _percentile(lat, 50), "latency_p99_s": _percentile(lat, 99),
            "t3_occupancy": d["slot_steps"] / max(d["capacity_steps"], 1),
            "mean_running": d["slot_steps"] / max(d["decode_steps"], 1), "decode_steps": d["decode_steps"],
            "t3_s": d["t3_s"], "s3gen_s": d["s3gen_s"], "prefill_s": d["prefill_s"],
            "t3_share": d["t3_s"] / max(d["t3_s"] + d["s3gen_s"] + d["prefill_s"], 1e-9), **_mem(tts.device)}


def _busy_latency(tts, voices, seed) -> dict:
    """One 10 s request alone, then the same request submitted into 15 running 30 s requests."""
    eng = tts.engine
    probe = Request(LONG_TEXT, voices[0], tts.params(seed=seed, max_new_tokens=_fit(tts, 250), language="en"),
                    speech_tokens_only=True, ignore_eos=True)
    alone = eng.submit(probe).result().timings["total"]
    others = [eng.submit(Request(LONG_TEXT, voices[i % len(voices)], tts.params(seed=seed + 1 + i, language="en",
                                                                                     max_new_tokens=_fit(tts, 750)),
                                 speech_tokens_only=True, ignore_eos=True)) for i in range(15)]
    time.sleep(0.2)
    busy = eng.submit(Request(LONG_TEXT, voices[0], tts.params(seed=seed, max_new_tokens=_fit(tts, 250), language="en"),
                              speech_tokens_only=True, ignore_eos=True)).result().timings["total"]
    for h in others:
        h.result()
    return {"alone_s": alone, "in_batch_of_16_s": busy, "ratio": busy / alone}


def _agreement(tts, voices, seed, n=8) -> dict:
    """Tokens of the single-request path vs the batched engine for the same requests (same seeds)."""
    texts = [LONG_TEXT[: 60 + 20 * i] for i in range(n)]
    alone = [tts.generate(t, voice=voices[i % len(voices)], seed=seed + i, max_new_tokens=_fit(tts, 200),
                           language="en").tokens
             for i, t in enumerate(texts)]
    many = tts.generate_many(texts, voice=[voices[i % len(voices)] for i in range(n)],
                             seed=[seed + i for i in range(n)], max_new_tokens=_fit(tts, 200),
                             language="en")
    same = sum(a == b.tokens for a, b in zip(alone, many))
    prefix = [next((j for j, (x, y) in enumerate(zip(a, b.tokens)) if x != y), min(len(a), len(b.tokens)))
              for a, b in zip(alone, many)]
    return {"requests": n, "identical": same, "mean_common_prefix_tokens": float(np.mean(prefix)),
            "mean_tokens": float(np.mean([len(a) for a in alone]))}


def run_concurrency(model: str, device: str, levels: list[int], seed: int = 1, n_voices: int = 4,
                    memory_plan: str = "auto", out_json: str | None = None, out_md: str | None = None,
                    plot: str | None = None, vram_budget: str | None = None, max_batch: int | None = None,
                    kv_slot_len: int | None = None) -> dict:
    """`max_batch` (default: the largest level, at least 32), `kv_slot_len`, `memory_plan` and `vram_budget` are
    the engine's `EngineConfig` options."""
    from ..tts import TTS
    _reset_peak(device)
    t = time.perf_counter()
    slots = {"kv_slot_len": kv_slot_len} if kv_slot_len else {}
    tts = TTS.from_dir(model, device=device, watermark=False, memory_plan=memory_plan, vram_budget=vram_budget,
                       max_batch=max_batch or max(max(levels), 32), **slots)
    voices = [tts.prepare_voice(synthetic_voice(seconds=10.0, seed=100 + i), sample_rate=24000) for i in range(n_voices)]
    eng = tts.engine
    t_graphs = time.perf_counter()
    eng.warmup(_fit(tts, 30 * TOKENS_PER_S))
    res: dict = {"device": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu",
                 "plan": tts.plan.name, "max_batch": eng.max_batch, "kv_slot_len": eng.slot_len,
                 "load_s": t_graphs - t, "graph_capture_s": time.perf_counter() - t_graphs, "levels": []}
    rnd = random.Random(seed)
    _run_level(tts, voices, [rnd.randint(75, 750) for _ in range(4)], seed)  # warm-up (S3Gen shapes, allocator)
    for n in levels:
        lengths = [rnd.randint(3 * TOKENS_PER_S, 30 * TOKENS_PER_S) for _ in range(n)]
        res["levels"].append(_run_level(tts, voices, lengths, seed + 1000 * n))
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res["levels"][-1].items()}))
    _reset_peak(device)
    res["uniform_32x30s"] = _run_level(tts, voices, [30 * TOKENS_PER_S] * 32, seed + 7)
    res["busy_latency"] = _busy_latency(tts, voices, seed + 11)
    res["token_agreement"] = _agreement(tts, voices, seed + 13)
    tts.close()
    if plot:
        with open(plot, "w") as f:
            f.write(svg_plot([lv["n"] for lv in res["levels"]], [lv["x_realtime"] for lv in res["levels"]],
                             f"Cadence aggregate throughput ({res['device']}, {res['plan']})"))
    write_report(res, markdown(res), out_json, out_md)
    return res


def markdown(res: dict) -> str:
    lines = [f"Device: {res['device']}; plan {res['plan']}; {res['max_batch']} KV slots of {res['kv_slot_len']} "
             f"positions; graph capture {res['graph_capture_s']:.1f} s.", "",
             "| concurrent requests | audio s | wall s | × real time | latency p50 | latency p99 | T3 occupancy "
             "| mean running | T3 / S3Gen / prefill s | peak alloc MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(str(lv["n"]), lv) for lv in res["levels"]] + [("32 × 30 s", res["uniform_32x30s"])]
    for name, lv in rows:
        lines.append(f"| {name} | {lv['audio_s']:.0f} | {lv['wall_s']:.2f} | **{lv['x_realtime']:.1f}** | "
                     f"{lv['latency_p50_s']:.2f} s | {lv['latency_p99_s']:.2f} s | {lv['t3_occupancy']:.0%} | "
                     f"{lv['mean_running']:.1f} | {lv['t3_s']:.2f} / {lv['s3gen_s']:.2f} / {lv['prefill_s']:.2f} | "
                     f"{lv.get('peak_allocated_mb', 0):.0f} |")
    b, a = res["busy_latency"], res["token_agreement"]
    lines += ["", f"One 10 s request: {b['alone_s']:.2f} s alone, {b['in_batch_of_16_s']:.2f} s inside a busy batch "
                  f"of 16 (× {b['ratio']:.2f}).",
              f"Token agreement, single-request path vs batched engine: {a['identical']}/{a['requests']} requests "
              f"identical; mean common prefix {a['mean_common_prefix_tokens']:.0f} of {a['mean_tokens']:.0f} tokens.", ""]
    return "\n".join(lines)


def svg_plot(xs: list[int], ys: list[float], title: str) -> str:
    """A small standalone SVG line chart (log2 x axis), so the docs need no plotting library."""
    W, H, L, B = 640, 360, 70, 50
    lx = [np.log2(max(x, 1)) for x in xs]
    x0, x1 = min(lx), max(max(lx), min(lx) + 1)
    y1 = max(ys) * 1.15 if ys else 1.0
    px = lambda v: L + (v - x0) / (x1 - x0) * (W - L - 20)  # noqa: E731
    py = lambda v: H - B - v / y1 * (H - B - 40)  # noqa: E731
    pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(lx, ys))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - 20}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{H - B}" x2="{L}" y2="30" stroke="black"/>',
           f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="2"/>']
    for x, a, b in zip(xs, lx, ys):
        out += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="4" fill="#1f77b4"/>',
                f'<text x="{px(a):.1f}" y="{py(b) - 8:.1f}" text-anchor="middle">{b:.0f}×</text>',
                f'<text x="{px(a):.1f}" y="{H - B + 18}" text-anchor="middle">{x}</text>']
    out += [f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">concurrent requests</text>',
            f'<text x="18" y="{H / 2}" transform="rotate(-90 18 {H / 2})" text-anchor="middle">audio seconds per '
            'wall second (× real time)</text>', "</svg>"]
    return "\n".join(out)
