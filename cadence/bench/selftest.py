"""`cadence doctor --measure`: the real-time factor to expect on this machine, in about ten seconds and without a
checkpoint. It times a model family's real networks at full width with random weights, after the memory plan's
transforms: three of T3's layers decoding a step (the original model's CFG pair of its 30 Llama layers, or Turbo's
one row of its 24 GPT-2 layers; scaled to all), one pass of the CFM estimator over a 10 s voice prompt plus 10 s of
speech (over the CFG pair for the original model's 10 steps, one row for Turbo's 2), and the vocoder over 1 s of
audio (scaled to 10). What it leaves out (the prompt prefill, sampling, the flow encoder) is a few percent of a
clip's time."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch

CLIP_S = 10.0
TOKENS_PER_S = 25
FRAMES_PER_S = 50  # mel frames
MEASURED_LAYERS = 3


def _best_of(fn, repeats: int, before=None) -> float:
    fn()  # first call: allocations, kernel selection
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _cache_flusher(device: torch.device):
    """On the CPU: a function that overwrites 128 MB, run (untimed) before each timed decode step, so the few layers
    measured read their weights from memory as a full decode step does, not from a last-level cache that holds
    them (Turbo's three measured layers are 38 MB of int8 weights; a 32 MB L3 held most of them and the step timed
    at half its real cost)."""
    if device.type != "cpu":
        return None
    buffer = torch.empty(128 * 2 ** 20, dtype=torch.uint8)
    return lambda: buffer.fill_(1)


@torch.inference_mode()
def _t3_token_s(plan, device: torch.device, family, tiny: bool) -> float:
    """Seconds per speech token: a decode step of the family's rows (the CFG pair, or one) through all layers,
    400 positions into the cache."""
    from ..memory.cpu_int8 import quantize_dynamic_int8_, t3_cpu_int8_targets
    full = family.t3_tiny_config if tiny else family.t3_config
    cfg = replace(full, n_layers=MEASURED_LAYERS)
    t3 = family.t3_class(cfg).to(device=device, dtype=plan.t3_dtype).eval()
    if plan.cpu_int8:
        quantize_dynamic_int8_(t3, t3_cpu_int8_targets)
    rows, S, pos = (2 if family.cfg_pair else 1), 512, 400
    shape = (MEASURED_LAYERS, rows, cfg.n_heads, S, cfg.head_dim)
    k_cache = torch.randn(shape, device=device, dtype=plan.t3_dtype)
    v_cache = torch.randn(shape, device=device, dtype=plan.t3_dtype)
    x = torch.randn(rows, 1, cfg.dim, device=device, dtype=plan.t3_dtype)
    positions = torch.tensor([pos], device=device)
    mask = torch.ones(1, pos + 1, dtype=torch.bool, device=device)

    hidden = x[:, 0]
    flush = _cache_flusher(device)
    layers = _best_of(lambda: t3.forward_backbone(x, k_cache, v_cache, positions, mask), 5, flush)
    head = _best_of(lambda: t3.speech_logits(hidden), 5, flush)  # once per step, not per layer
    return layers * full.n_layers / MEASURED_LAYERS + head + _sampling_s(device, full.speech_vocab, rows)


@torch.inference_mode()
def _sampling_s(device: torch.device, vocab: int, rows: int) -> float:
    """One step's sampling as the decode loops run it: CFG, penalty, temperature, min-p, top-k, top-p (a sort over
    the vocabulary), the step's race noise and the draw."""
    from ..layers.race_noise import race_noise
    from ..layers.sampling import process_logits, sample
    logits = torch.randn(rows, vocab, device=device)
    counts = torch.zeros(1, vocab, device=device, dtype=torch.int32)

    def knob(v, dtype=torch.float32):
        return torch.tensor([v], device=device, dtype=dtype)
    seeds, step = torch.tensor([1], device=device), torch.tensor([3], device=device)

    def run():
        probs = process_logits(logits[:1], logits[1:2] if rows == 2 else None, counts, knob(0.5), knob(1.2),
                               knob(0.8), knob(0.05), knob(0.95), knob(1000, torch.long))
        return sample(probs, race_noise(seeds, step, vocab))
    return _best_of(run, 5)


def _estimator(plan, device: torch.device, cfg):
    """The CFM estimator at full width, random weights, after the plan's transforms."""
    from ..memory.cpu_int8 import apply_flow_transforms_, quantize_dynamic_int8_
    from ..models.s3gen.estimator import ConditionalDecoder
    est = ConditionalDecoder(cfg).to(device=device, dtype=plan.flow_dtype).eval()
    if plan.cpu_int8:
        quantize_dynamic_int8_(est, lambda name: ".attn1." in name or ".ff." in name)
    apply_flow_transforms_(est, plan)
    return est


@torch.inference_mode()
def _estimator_pass_s(est, frames: int) -> float:
    """One estimator pass at `frames` mel frames: over the CFG pair, or one row for a meanflow estimator (told
    its end time too)."""
    p = est.final_proj.weight
    dev, dt, meanflow = p.device, p.dtype, est.cfg.meanflow
    rows = 1 if meanflow else 2
    x, mu, cond = (torch.randn(rows, 80, frames, device=dev, dtype=dt) for _ in range(3))
    mask = torch.ones(rows, 1, frames, device=dev, dtype=dt)
    t, spks = torch.rand(rows, device=dev, dtype=dt), torch.randn(rows, 80, device=dev, dtype=dt)
    r = torch.ones(rows, device=dev, dtype=dt) if meanflow else None
    return _best_of(lambda: est(x, mask, mu, t, spks, cond, r), 1)


@torch.inference_mode()
def _vocoder_s(plan, device: torch.device, cfg, seconds: float = 1.0) -> float:
    from ..models.s3gen.hift import HiFTGenerator
    hift = HiFTGenerator(cfg).to(device=device, dtype=plan.vocoder_dtype).eval()
    for m in (hift.f0_predictor, hift.m_source):
        m.float()
    frames = int(seconds * FRAMES_PER_S)
    mel = torch.randn(1, 80, frames, device=device)
    phase = torch.zeros(1, cfg.n_harmonics + 1, 1, device=device)
    noise = torch.randn(1, cfg.n_harmonics + 1, frames * cfg.samples_per_frame, device=device)
    return _best_of(lambda: hift(mel, phase, noise), 2)


def measure(plan, device: torch.device, tiny: bool = False, family=None) -> dict:
    """-> the stage times of a 10 s clip with a 10 s voice prompt (seconds) and its real-time factor, for
    `family` (default: the original model). `tiny`: the tests' small networks, for the mechanism only."""
    from ..family import ENGLISH
    family = family or ENGLISH
    s3_cfg = family.s3gen(tiny)
    t0 = time.perf_counter()
    token_s = _t3_token_s(plan, device, family, tiny)
    frames = int(2 * CLIP_S * FRAMES_PER_S)  # prompt + speech
    est = _estimator(plan, device, s3_cfg.flow.estimator)  # built and quantised once for every pass timed
    flow_s = s3_cfg.flow.n_timesteps * _estimator_pass_s(est, frames)
    vocoder_s = _vocoder_s(plan, device, s3_cfg.hift) * CLIP_S
    t3_s = token_s * CLIP_S * TOKENS_PER_S
    total = t3_s + flow_s + vocoder_s
    window = _window_pace(est, s3_cfg, vocoder_s / (CLIP_S * TOKENS_PER_S))
    return {"family": family.name, "plan": plan.name, "device": str(device), "threads": torch.get_num_threads(),
            "clip_s": CLIP_S, "t3_tokens_per_s": 1 / token_s, "t3_s": t3_s, "flow_s": flow_s, "vocoder_s": vocoder_s,
            "rtf": total / CLIP_S, "token_s": token_s, **window, "self_test_s": time.perf_counter() - t0}


def _window_pace(est, s3_cfg, vocoder_token_s: float) -> dict:
    """A streaming window's render cost, as the engine's default context sets it (`EngineConfig`: the last 4 s of
    the voice prompt, 2 s of audio already sent): the CFM solve timed at two window sizes, fitted as a fixed
    part plus a part per new token; the vocoder's share per token from the clip's."""
    from ..config import EngineConfig
    keep_prompt, keep_history = EngineConfig().stream_context_tokens()
    ratio, steps = s3_cfg.flow.token_mel_ratio, s3_cfg.flow.n_timesteps
    context = keep_prompt + keep_history + s3_cfg.flow.lookahead
    small, large = 16, 96
    at = {n: steps * _estimator_pass_s(est, ratio * (context + n)) for n in (small, large)}
    per_token = max(0.0, (at[large] - at[small]) / (large - small))
    return {"window_fixed_s": max(0.0, at[small] - small * per_token),
            "window_token_s": per_token + vocoder_token_s}


def describe(m: dict) -> list[str]:
    rtf = m["rtf"]
    lag = math.ceil((rtf - 1) * 10) / 10
    pace = ("faster than real time" if rtf < 1 else
            f"slower than real time: a stream of D seconds plays without gaps when playback starts {lag:.1f} x D s "
            f"after its first audio")
    lines = [f"measured ({m['self_test_s']:.1f} s self-test, {m.get('family', 'english')} model, plan {m['plan']} on "
             f"{m['device']}, {m['threads']} threads): "
             f"T3 {m['t3_tokens_per_s']:.1f} tokens/s; a 10 s clip with a 10 s voice prompt: T3 {m['t3_s']:.1f} s, "
             f"flow {m['flow_s']:.1f} s, vocoder {m['vocoder_s']:.1f} s; RTF {rtf:.2f} ({pace})"]
    if "window_fixed_s" in m:
        lines.append(streaming_advice(m))
    return lines


def streaming_advice(m: dict, stream_s: float = 30.0) -> str:
    """What the self-test's pace means for a stream of `stream_s` (`engine.pace`): the default windows, and the
    window ladder (`--stream-windows`) with the earliest first audio that plays without a gap, if one does."""
    from ..config import DEFAULT_STREAM_WINDOWS
    from ..engine.pace import Pace, recommend, simulate
    pace = Pace(prefill_s=0.0, token_s=m["token_s"], window_fixed_s=m["window_fixed_s"],
                window_token_s=m["window_token_s"])
    tokens = round(stream_s * TOKENS_PER_S)
    default, best = simulate(DEFAULT_STREAM_WINDOWS, pace, tokens), recommend(pace, stream_s)
    ladder = ",".join(map(str, best.ladder))
    head = (f"streaming, estimated from these timings ({stream_s:.0f} s stream; a window costs "
            f"{pace.window_fixed_s:.2f} s for its context + "
            f"{pace.window_token_s * 1e3:.0f} ms per token): the default windows give first audio after "
            f"{default.first_audio_s:.1f} s and ")
    head += ("play without gaps" if default.gapless else
             f"{default.underruns} gaps, {default.silence_s:.1f} s of silence in all")
    if best.gapless:
        return head + (f"; --stream-windows {ladder} plays without gaps, first audio after {best.first_audio_s:.1f} s"
                       if not default.gapless else "")
    return head + (f"; no window ladder keeps up on this machine: the fewest gaps come from --stream-windows "
                   f"{ladder} ({best.silence_s:.1f} s of silence; start playback that long after the first audio "
                   f"to play it through)")
