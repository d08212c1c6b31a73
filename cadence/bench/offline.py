"""`cadence bench`: the seed document's table on your own GPU, Cadence and (with --reference) the stock
chatterbox-tts side by side in one process, on the same checkpoint, voice, texts and token counts."""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

SHORT_TEXT = "Hello there, this is a quick test of the reference model."
LONG_TEXT = ("The quick brown fox jumps over the lazy dog. " * 4 + "When the sunlight strikes raindrops in the "
             "air, they act as a prism and form a rainbow, a long round arch with its two ends beyond the horizon.")


@dataclass
class Case:
    name: str
    text: str
    tokens: int


@dataclass
class BenchOptions:
    model: str
    device: str = "cuda"
    voice_audio: str | None = None
    reference: bool = False
    repeats: int = 3
    short_tokens: int = 75
    long_tokens: int = 750
    dtype: str = "auto"
    enforce_eager: bool = False
    compile: bool | None = None
    vocoder_dtype: str = "auto"
    memory_plan: str = "auto"
    vram_budget: str | None = None
    """With memory_plan auto: the budget the plan is chosen for (`EngineConfig.vram_budget`)."""
    seed: int = 1
    watermark: bool = False
    """Apply the Perth watermark (its time counts in total and RTF), on both sides."""
    watermark_device: str = "cpu"
    """Where Cadence's watermark runs (`EngineConfig.watermark_device`)."""
    cpu_threads: int | None = None
    """Threads of the CPU math (`EngineConfig.cpu_threads`); the reference runs with the same count."""
    consecutive: int = 0
    """After the timed cases, this many more short generations in a row, device memory read after each
    (the memory-flatness check: no growth in allocated or reserved)."""
    cases: list = field(default_factory=list)


def _sync(dev):
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


def _timed(dev, fn):
    _sync(dev)
    t = time.perf_counter()
    out = fn()
    _sync(dev)
    return out, time.perf_counter() - t


def _mem(dev) -> dict:
    if torch.device(dev).type != "cuda":
        return {}
    out = {"allocated_mb": torch.cuda.memory_allocated() / 2**20, "reserved_mb": torch.cuda.memory_reserved() / 2**20,
           "peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
           "peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20}
    try:
        import pynvml
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
            if p.pid == os.getpid():
                out["process_mb"] = p.usedGpuMemory / 2**20
    except Exception:  # noqa: BLE001 - NVML is optional
        pass
    return out


def write_report(result: dict, md: str | None, out_json: str | None, out_md: str | None) -> None:
    """Every bench's outputs: the JSON of `result`, the Markdown table `md`, and the table on stdout."""
    if out_json:
        with open(out_json, "w") as f:
            json.dump(result, f, indent=1)
    if md is not None:
        if out_md:
            with open(out_md, "w") as f:
                f.write(md)
        print(md)
    written = [p for p in (out_json, out_md if md is not None else None) if p]
    if written:
        print(f"wrote {', '.join(written)}", file=sys.stderr)


def _reset_peak(dev):
    if torch.device(dev).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _case_summary(runs: list[dict]) -> dict:
    """Medians and spreads of one case's repeats, and the worst memory figures."""
    return {"runs": runs, **{k: _summary([r[k] for r in runs]) for k in ("t3_tok_per_s", "s3gen_s", "total_s", "rtf", "audio_s")},
            **{k: max(r.get(k, 0) for r in runs) for k in ("peak_allocated_mb", "peak_reserved_mb", "process_mb")}}


def length_knobs(tts) -> dict:
    """Knobs that keep a benchmark's token count where it was set. Random weights trip the multilingual model's
    end-of-speech rules within a few steps (they repeat tokens): the rules still run in every step, their decision
    is not applied (`alignment_stop=False`), as the reference's forced EOS is undone on its side."""
    return {"alignment_stop": False} if "alignment_stop" in tts.family.defaults else {}


def _fitting_text(tts, text: str) -> str:
    """`text`, or its longest run of leading words whose tokens the loaded T3 holds (a tiny checkpoint)."""
    words = text.split()
    while len(words) > 1:
        try:
            tts.text_ids(" ".join(words), "en")
            break
        except ValueError:
            words = words[: max(1, len(words) * 3 // 4)]
    return " ".join(words)


def bench_cadence(opt: BenchOptions, wav: np.ndarray, sr: int) -> dict:
    from ..tts import TTS
    res: dict = {"engine": "cadence"}
    _reset_peak(opt.device)
    tts, res["load_s"] = _timed(opt.device, lambda: TTS.from_dir(opt.model, device=opt.device, watermark=opt.watermark,
                                                                  watermark_device=opt.watermark_device,
                                                                  dtype=opt.dtype, enforce_eager=opt.enforce_eager,
                                                                  compile=opt.compile,
                                                                  vocoder_dtype=opt.vocoder_dtype,
                                                                  vram_budget=opt.vram_budget,
                                                                  memory_plan=opt.memory_plan,
                                                                  cpu_threads=opt.cpu_threads))
    res["after_load"] = _mem(opt.device)
    res["plan"], res["plan_reason"], res["threads"] = tts.plan.name, tts.plan_reason, torch.get_num_threads()
    voice, cold = _timed(opt.device, lambda: tts.prepare_voice(wav, sample_rate=sr))
    _, warm = _timed(opt.device, lambda: tts.prepare_voice(wav, sample_rate=sr))
    res["prepare_cold_s"], res["prepare_warm_s"] = cold, warm
    for case in opt.cases:  # a small checkpoint holds fewer text positions: the case's text, cut to fit
        case.text = _fitting_text(tts, case.text)
    for case in opt.cases:  # warm-up: captures graphs for these shapes, as a server's first requests would
        tts.generate(case.text, voice=voice, seed=0, max_new_tokens=case.tokens, speech_tokens_only=True,
                     language="en", **length_knobs(tts))
    for case in opt.cases:
        runs = []
        for r in range(opt.repeats):
            _reset_peak(opt.device)
            audio, total = _timed(opt.device, lambda: tts.generate(case.text, voice=voice, seed=opt.seed + r,
                                                                   max_new_tokens=case.tokens,
                                                                   speech_tokens_only=True, language="en",
                                                                   **length_knobs(tts)))
            t = audio.timings
            runs.append({"t3_s": t["t3"], "t3_tokens": len(audio.tokens), "t3_tok_per_s": len(audio.tokens) / t["t3"],
                         "s3gen_s": t["s3gen"], "total_s": total, "audio_s": audio.duration,
                         "rtf": total / audio.duration, **_mem(opt.device)})
        res[case.name] = _case_summary(runs)
    if opt.consecutive and torch.device(opt.device).type == "cuda":
        res["consecutive"] = _consecutive(tts, voice, opt)
    del tts, voice
    gc.collect()
    if torch.device(opt.device).type == "cuda":
        torch.cuda.empty_cache()
    return res


def _consecutive(tts, voice, opt: BenchOptions) -> dict:
    """`opt.consecutive` short generations back to back: allocated and reserved device memory after each."""
    case = opt.cases[0]
    allocated, reserved = [], []
    t0 = time.perf_counter()
    for i in range(opt.consecutive):
        tts.generate(case.text, voice=voice, seed=opt.seed + i, max_new_tokens=case.tokens, speech_tokens_only=True,
                     language="en", **length_knobs(tts))
        _sync(opt.device)
        allocated.append(torch.cuda.memory_allocated() / 2**20)
        reserved.append(torch.cuda.memory_reserved() / 2**20)
    return {"n": opt.consecutive, "tokens": case.tokens, "wall_s": time.perf_counter() - t0,
            "allocated_mb": {"first": allocated[0], "last": allocated[-1], "min": min(allocated), "max": max(allocated)},
            "reserved_mb": {"first": reserved[0], "last": reserved[-1], "min": min(reserved), "max": max(reserved)},
            "growth_allocated_mb": allocated[-1] - allocated[0], "growth_reserved_mb": reserved[-1] - reserved[0],
            "allocated_series_mb": allocated, "reserved_series_mb": reserved}


def bench_reference(opt: BenchOptions, wav_path: str) -> dict:
    """The stock package: T3 through `t3.inference` bounded to the same token count, S3Gen over random valid
    tokens of that count (random weights sample invalid ids the reference would drop)."""
    import contextlib
    if not hasattr(torch.backends.cuda, "sdp_kernel"):
        torch.backends.cuda.sdp_kernel = lambda **_: contextlib.nullcontext()
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.tts import ChatterboxTTS, punc_norm
    res: dict = {"engine": "reference chatterbox-tts 0.1.7"}
    _reset_peak(opt.device)
    ref, res["load_s"] = _timed(opt.device, lambda: ChatterboxTTS.from_local(opt.model, opt.device))
    res["after_load"] = _mem(opt.device)
    _, res["prepare_cold_s"] = _timed(opt.device, lambda: ref.prepare_conditionals(wav_path))
    _, res["prepare_warm_s"] = _timed(opt.device, lambda: ref.prepare_conditionals(wav_path))
    c = ref.conds.t3
    gen = torch.Generator().manual_seed(opt.seed)

    def run(case: Case):
        tt = ref.tokenizer.text_to_tokens(punc_norm(case.text))
        tt = torch.nn.functional.pad(torch.cat([tt, tt]), (1, 0), value=255)
        tt = torch.nn.functional.pad(tt, (0, 1), value=0).to(opt.device)
        cond = T3Cond(speaker_emb=c.speaker_emb, cond_prompt_speech_tokens=c.cond_prompt_speech_tokens,
                      emotion_adv=c.emotion_adv)
        with torch.inference_mode():
            toks, t3_s = _timed(opt.device, lambda: ref.t3.inference(
                t3_cond=cond, text_tokens=tt, max_new_tokens=case.tokens, temperature=0.8, cfg_weight=0.5,
                repetition_penalty=1.2, min_p=0.05, top_p=1.0))
            speech = torch.randint(0, 6561, (case.tokens,), generator=gen).to(opt.device)
            (wav_out, _), s3_s = _timed(opt.device, lambda: ref.s3gen.inference(speech_tokens=speech,
                                                                               ref_dict=ref.conds.gen))
        audio_s = wav_out.shape[-1] / 24000
        return {"t3_s": t3_s, "t3_tokens": int(toks.shape[1]), "t3_tok_per_s": toks.shape[1] / t3_s,
                "s3gen_s": s3_s, "total_s": t3_s + s3_s, "audio_s": audio_s, "rtf": (t3_s + s3_s) / audio_s}

    res.update(measure_cases(opt, run))
    del ref
    gc.collect()
    return res


def measure_cases(opt: BenchOptions, run) -> dict:
    """A reference bench's cases: `run(case)` once per case at 16 tokens (warm-up), then `opt.repeats` times
    each with the peak memory reset before and read after -> {case name: summary}."""
    for case in opt.cases:
        run(Case(case.name, case.text, min(case.tokens, 16)))
    out = {}
    for case in opt.cases:
        runs = []
        for _ in range(opt.repeats):
            _reset_peak(opt.device)
            runs.append({**run(case), **_mem(opt.device)})
        out[case.name] = _case_summary(runs)
    return out


def markdown(result: dict) -> str:
    ours, ref = result["cadence"], result.get("reference")
    dev = result["device"]
    lines = [f"Model: {result.get('family', 'english')}; watermark {'on' if result.get('watermark') else 'off'}. "
             f"Device: {dev}; torch {result['torch']}; dtype {result['dtype']}; compile {result.get('compile')}; "
             f"vocoder {result.get('vocoder_dtype')}; "
             f"{result['repeats']} repeats after a warm-up (median, [min–max]).", "",
             "| metric | Cadence | " + ("reference | ratio |" if ref else ""),
             "|---|---|" + ("---|---|" if ref else "")]

    def row(name, get, fmt="{:.3f}", better="lower"):
        a = get(ours)
        line = f"| {name} | {fmt.format(a)} |"
        if ref:
            b = get(ref)
            ratio = (b / a if better == "lower" else a / b) if a and b else float("nan")
            line += f" {fmt.format(b)} | {ratio:.1f}× |"
        lines.append(line)

    on_gpu = "allocated_mb" in ours["after_load"]  # device memory rows: CUDA only
    if "plan" in ours:
        lines[0] += f" Cadence's plan: {ours['plan']}, {ours.get('threads')} CPU threads."
    row("load (s)", lambda r: r["load_s"], "{:.2f}")
    if on_gpu:
        row("VRAM allocated after load (MB)", lambda r: r["after_load"].get("allocated_mb", 0), "{:.0f}")
    row("voice preparation cold (s)", lambda r: r["prepare_cold_s"])
    row("voice preparation warm (s)", lambda r: r["prepare_warm_s"])
    for case in result["cases"]:
        n = case["name"]
        row(f"{n}: T3 tokens/s", lambda r: r[n]["t3_tok_per_s"]["median"], "{:.0f}", better="higher")
        row(f"{n}: S3Gen (s)", lambda r: r[n]["s3gen_s"]["median"])
        row(f"{n}: total (s)", lambda r: r[n]["total_s"]["median"])
        row(f"{n}: audio (s)", lambda r: r[n]["audio_s"]["median"], "{:.2f}", better="higher")
        row(f"{n}: RTF", lambda r: r[n]["rtf"]["median"], "{:.4f}")
        if on_gpu:
            row(f"{n}: peak VRAM allocated (MB)", lambda r: r[n]["peak_allocated_mb"], "{:.0f}")
            row(f"{n}: peak VRAM reserved (MB)", lambda r: r[n]["peak_reserved_mb"], "{:.0f}")
            row(f"{n}: process VRAM, NVML (MB)", lambda r: r[n]["process_mb"], "{:.0f}")
    spreads = [f"{c['name']} RTF [{ours[c['name']]['rtf']['min']:.4f}–{ours[c['name']]['rtf']['max']:.4f}]"
               for c in result["cases"]]
    lines += ["", "Cadence spread: " + ", ".join(spreads)]
    return "\n".join(lines) + "\n"


def reference_for(family):
    """The reference bench of a model family: the original model's, Turbo's or the multilingual model's."""
    from ..family import MULTILINGUAL, TURBO
    if family is MULTILINGUAL:
        from .reference_multilingual import bench_reference_multilingual
        return bench_reference_multilingual
    if family is TURBO:
        from .reference_turbo import bench_reference_turbo
        return bench_reference_turbo
    return bench_reference


def cpu_name() -> str:
    """'cpu: <model name>, N cores' as the machine reports it."""
    import platform
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"cpu: {model}, {os.cpu_count()} cores"


def run_bench(opt: BenchOptions, out_json: str | None, out_md: str | None) -> dict:
    from ..audio.io import read_audio
    from ..random_checkpoint import synthetic_voice
    if opt.voice_audio:
        wav, sr = read_audio(opt.voice_audio)
        wav_path = opt.voice_audio
    else:
        import tempfile

        import soundfile as sf
        wav, sr = synthetic_voice(seconds=9.98), 24000
        wav_path = os.path.join(tempfile.mkdtemp(), "voice.wav")
        sf.write(wav_path, wav, sr, subtype="PCM_16")
    opt.cases = [Case("short", SHORT_TEXT, opt.short_tokens), Case("long", LONG_TEXT, opt.long_tokens)]
    from ..checkpoint import resolve
    from ..family import detect_family
    family = detect_family(resolve(opt.model))
    reference = reference_for(family) if opt.reference else None  # refused before any work
    result = {"device": torch.cuda.get_device_name() if torch.device(opt.device).type == "cuda" else cpu_name(),
              "torch": torch.__version__, "family": family.name, "watermark": opt.watermark,
              "dtype": opt.dtype, "compile": opt.compile, "vocoder_dtype": opt.vocoder_dtype, "repeats": opt.repeats,
              "cases": [{"name": c.name, "tokens": c.tokens, "text": c.text} for c in opt.cases]}
    result["cadence"] = bench_cadence(opt, wav, sr)
    if reference is not None:
        result["reference"] = reference(opt, wav_path)
    write_report(result, markdown(result), out_json, out_md)
    return result
