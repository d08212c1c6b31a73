"""`cadence bench --voices`: what a voice costs (disk, device memory, preparation, switching) and whether
device memory stays flat while many stored voices take turns."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch

from .offline import length_knobs

TEXT = "Hello there, this is a quick test."


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _progress(line: str) -> None:
    print(f"bench --voices: {line}", file=sys.stderr, flush=True)


def bench_voices(model: str, device: str = "cuda", n_store: int = 1000, n_use: int = 100, tokens: int = 25,
                 prepare_device: str = "auto", voice_cache_mb: int = 256, progress=_progress) -> dict:
    """The measurements, with a line to `progress` (stderr by default) as each stage starts and every tenth of
    the long ones."""
    from ..random_checkpoint import synthetic_voice
    from ..sampling_params import SamplingParams
    from ..tts import TTS
    tts = TTS.from_dir(model, device=device, watermark=False, prepare_device=prepare_device,
                       voice_cache_mb=voice_cache_mb)
    dev = tts.device
    wav = synthetic_voice(seconds=9.98)
    res: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                 "prepare_device": prepare_device, "voice_cache_mb": voice_cache_mb, "n_store": n_store, "n_use": n_use, "tokens_per_request": tokens}
    times = []
    progress(f"loaded {model} on {dev}; preparing a 10 s voice 6 times")
    for _ in range(6):
        _sync(dev)
        t = time.perf_counter()
        voice = tts.prepare_voice(wav, sample_rate=24000)
        _sync(dev)
        times.append(time.perf_counter() - t)
    res["prepare_cold_s"], res["prepare_warm_s"] = times[0], statistics.median(times[1:])
    with tempfile.TemporaryDirectory() as root:
        lib = tts.library(root)
        lib.add("with-audio", wav, sample_rate=24000)
        res["disk_bytes_with_source_audio"] = lib.path("with-audio").stat().st_size
        t = time.perf_counter()
        g = torch.Generator().manual_seed(0)
        every = max(1, n_store // 10)
        for i in range(n_store):
            if i % every == 0:
                progress(f"storing voices: {i}/{n_store}")
            v = voice.to("cpu")
            v.speaker_emb = v.speaker_emb + 0.01 * torch.randn(v.speaker_emb.shape, generator=g)
            v.xvector = v.xvector + 0.01 * torch.randn(v.xvector.shape, generator=g)
            lib.add_voice(f"v{i:04d}", v)
        res["store_s_per_voice"] = (time.perf_counter() - t) / n_store
        res["disk_bytes_tensors_only"] = lib.path("v0000").stat().st_size
        tts.generate(TEXT, voice=lib.get("v0000"), seed=0, max_new_tokens=tokens, speech_tokens_only=True,
                     language="en", **length_knobs(tts))
        base = torch.cuda.memory_allocated() if dev.type == "cuda" else 0
        mem, load_s = [], []
        every = max(1, n_use // 10)
        for i in range(n_use):
            if i % every == 0:
                progress(f"generating with stored voices: {i}/{n_use}")
            t = time.perf_counter()
            v = lib.get(f"v{i * (n_store // n_use):04d}")
            load_s.append(time.perf_counter() - t)
            tts.generate(TEXT, voice=v, seed=i, max_new_tokens=tokens, speech_tokens_only=True, language="en",
                         **length_knobs(tts))
            mem.append((torch.cuda.memory_allocated() if dev.type == "cuda" else 0) - base)
        res["library_get_s"] = statistics.median(load_s)
        res["allocated_growth_mb"] = {"after_first": mem[0] / 2**20, "after_last": mem[-1] / 2**20,
                                      "max": max(mem) / 2**20}
        res["voice_cache_entries"] = len(tts.voice_cache)
        res["voice_cache_used_mb"] = tts.voice_cache.nbytes / 2**20
        v = lib.get("v0001")
        resident = tts.voice_cache.get(v)
        tts.prefill(TEXT, v, SamplingParams.for_family(tts.family))
        res["resident_bytes_per_voice"] = resident.nbytes
        a, b = lib.get("v0002"), lib.get("v0003")
        for x in (a, b):
            tts.prefill(TEXT, x, SamplingParams.for_family(tts.family))
        n = 1000
        progress(f"switching between two cached voices {n} times")
        _sync(dev)
        t = time.perf_counter()
        for i in range(n):
            tts.voice_cache.get(a if i % 2 else b)
        _sync(dev)
        res["switch_cached_voice_s"] = (time.perf_counter() - t) / n
    return res


def markdown(res: dict) -> str:
    rows = [("voice preparation, 10 s clip, cold / warm", f"{res['prepare_cold_s']:.3f} / {res['prepare_warm_s']:.3f} s"),
            ("disk per voice, with its source audio", f"{res['disk_bytes_with_source_audio'] / 1024:.0f} KB"),
            ("disk per voice, tensors only", f"{res['disk_bytes_tensors_only'] / 1024:.0f} KB"),
            ("device memory per resident voice (tensors + T3 conditioning)", f"{res['resident_bytes_per_voice'] / 1024:.0f} KB"),
            ("switch between cached voices", f"{res['switch_cached_voice_s'] * 1e6:.1f} µs"),
            ("library get (read + verify from disk)", f"{res['library_get_s'] * 1e3:.2f} ms"),
            (f"allocated growth over {res['n_use']} voices of {res['n_store']} (first / last / max)",
             "{after_first:.1f} / {after_last:.1f} / {max:.1f} MB".format(**res["allocated_growth_mb"])),
            ("voice cache entries / size", f"{res['voice_cache_entries']} / {res['voice_cache_used_mb']:.1f} MB")]
    return (f"Device: {res['device']}; preparation encoders: {res['prepare_device']}; "
            f"voice cache bound {res['voice_cache_mb']} MB\n\n| metric | Cadence |\n|---|---|\n"
            + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n")
