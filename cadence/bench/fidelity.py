"""Reduced precision against Cadence's fp32 path: T3 logits under teacher forcing, mel and waveform for the
same tokens and the same noise."""

from __future__ import annotations

import numpy as np
import torch

from ..engine.rng import RequestRNG
from ..sampling_params import SamplingParams

TEXT = "Hello there, this is a quick test of the reference model."


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _snr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu().numpy(), b.double().cpu().numpy()
    return float(10 * np.log10((b ** 2).sum() / max(((a - b) ** 2).sum(), 1e-30)))


def fidelity(model: str, device: str, dtype: str, vocoder_dtype: str = "float32", steps: int = 50,
             n_tokens: int = 250, wav: np.ndarray | None = None, sr: int = 24000) -> dict:
    from ..tts import TTS
    ref = TTS.from_dir(model, device=device, watermark=False, memory_plan="fp32", enforce_eager=True)
    low = TTS.from_dir(model, device=device, watermark=False, dtype=dtype, vocoder_dtype=vocoder_dtype)
    return {"dtype": dtype, "vocoder_dtype": vocoder_dtype, **compare(ref, low, device, steps, n_tokens, wav, sr)}


def fidelity_of_plans(model: str, device: str, plans: list[str], steps: int = 50, n_tokens: int = 250) -> dict:
    """Each memory plan against the fp32 eager path, one fp32 model loaded once."""
    import gc

    from ..tts import TTS
    ref = TTS.from_dir(model, device=device, watermark=False, memory_plan="fp32", enforce_eager=True)
    out = {}
    for name in plans:
        low = TTS.from_dir(model, device=device, watermark=False, memory_plan=name, enforce_eager=True)
        out[name] = compare(ref, low, device, steps, n_tokens)
        del low
        gc.collect()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def compare(ref, low, device: str, steps: int = 50, n_tokens: int = 250, wav: np.ndarray | None = None,
            sr: int = 24000) -> dict:
    from ..random_checkpoint import synthetic_voice
    if wav is None:
        wav, sr = synthetic_voice(seconds=9.98), 24000
    voice = ref.prepare_voice(wav, sample_rate=sr)
    p = SamplingParams(seed=0, max_new_tokens=steps, language="en")
    forced = torch.randint(0, 6561, (steps,), generator=torch.Generator().manual_seed(5)).tolist()
    a = ref.t3_runner.generate(ref.prefill(TEXT, voice, p), p, 0,
                               forced_tokens=forced, keep_logits=True)
    t3_lease, s3_lease = low._stage_leases  # offload plans lend each stage to the GPU in turn
    with t3_lease:
        b = low.t3_runner.generate(low.prefill(TEXT, voice, p), p, 0,
                                   forced_tokens=forced, keep_logits=True)
    logit_errs = [_rel(x, y) for x, y in zip(b.logits, a.logits)]
    top1 = float(np.mean([int(x[0].argmax() == y[0].argmax()) for x, y in zip(b.logits, a.logits)]))
    tokens = torch.randint(0, 6561, (n_tokens,), generator=torch.Generator().manual_seed(6))
    mel_a = ref.audio_runner.mel(tokens, voice, RequestRNG(7, device))
    with s3_lease:
        mel_b = low.audio_runner.mel(tokens, voice, RequestRNG(7, device))
    wav_a = ref.audio_runner.vocode(mel_a, RequestRNG(8, device))
    with s3_lease:
        wav_b = low.audio_runner.vocode(mel_b, RequestRNG(8, device))
        wav_same_mel = low.audio_runner.vocode(mel_a, RequestRNG(8, device))
    return {"t3_steps": steps, "s3gen_tokens": n_tokens,
            "t3_logits_rel_err_max": max(logit_errs), "t3_logits_rel_err_mean": float(np.mean(logit_errs)),
            "t3_cond_top1_agreement": top1, "mel_rel_err": _rel(mel_b, mel_a), "mel_snr_db": _snr(mel_b, mel_a),
            "wave_rel_err": _rel(wav_b, wav_a), "wave_snr_db": _snr(wav_b, wav_a),
            "vocoder_only_wave_snr_db": _snr(wav_same_mel, wav_a)}
