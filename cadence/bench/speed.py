"""`cadence bench --speeds`: what OpenAI's `speed` (0.25-4) costs and how well it keeps pitch.

Quality, independent of the weights: a speech-like test signal with a known pitch contour goes through S3Gen's
log-mel, the mel is stretched exactly as the engine stretches it (`cadence.audio.speed.stretch_mel`), and both
mels are turned back into audio the same way (Griffin-Lim, so its artefacts are on both sides); measured: the
pitch (YIN median over the louder frames, in cents against the unstretched one) and the length (against the source
length / speed). Beside it, the same signal played faster or slower by resampling, which is what keeping the
pitch is measured against.

Cost, on the loaded model: S3Gen (flow + vocoder) for the same tokens at each speed, median of `repeats`, and
its ratio to speed 1 (the flow's work does not change with speed; the vocoder's scales with the output)."""

from __future__ import annotations

import statistics

import numpy as np
import torch

SPEEDS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
SR = 24000


def _f0_median(wav: np.ndarray) -> float:
    """Median YIN pitch over the louder half of the frames (the test signal is voiced throughout; its quiet
    frames are its noise bursts' gaps)."""
    import librosa  # noqa: PLC0415 - a bench-only dependency (it comes with the watermark's extra)
    f0 = librosa.yin(wav, fmin=60, fmax=400, sr=SR, frame_length=2048, hop_length=480)
    rms = librosa.feature.rms(y=wav, frame_length=2048, hop_length=480)[0][: f0.size]
    loud = rms >= np.median(rms)
    return float(np.median(f0[: rms.size][loud]))


def _invert(log_mel: torch.Tensor, n_iter: int) -> np.ndarray:
    """A log-mel back to audio: the mel filters' least-squares inverse, then Griffin-Lim from one fixed start."""
    import librosa  # noqa: PLC0415
    mel = np.exp(log_mel[0].double().numpy())
    stft = librosa.feature.inverse.mel_to_stft(mel, sr=SR, n_fft=1920, fmin=0.0, fmax=8000.0, htk=False,
                                               norm="slaney")
    return librosa.griffinlim(stft, n_iter=n_iter, hop_length=480, win_length=1920, random_state=0)


def pitch_and_length(speeds=SPEEDS, seconds: float = 6.0, n_iter: int = 32) -> list[dict]:
    """Per speed: cents of pitch change and length error of the mel stretch, and the pitch change of resampling."""
    import librosa  # noqa: PLC0415

    from ..audio.dsp import s3gen_mel
    from ..audio.speed import stretch_mel
    from ..random_checkpoint import synthetic_voice
    wav = synthetic_voice(seconds=seconds, sr=SR, seed=3)
    mel = s3gen_mel(torch.from_numpy(wav)[None])
    plain = _invert(mel, n_iter)
    f0_plain = _f0_median(plain)
    rows = []
    for speed in speeds:
        out = _invert(stretch_mel(mel, speed), n_iter)
        resampled = librosa.resample(wav, orig_sr=SR, target_sr=round(SR / speed), res_type="soxr_hq")
        rows.append({"speed": speed,
                     "pitch_cents": 1200 * float(np.log2(_f0_median(out) / f0_plain)),
                     "length_ratio": (out.size / plain.size) * speed,  # 1.0 = exactly source / speed
                     "resampled_pitch_cents": 1200 * float(np.log2(_f0_median(resampled) / _f0_median(wav)))})
    return rows


def cost(tts, speeds=SPEEDS, tokens: int = 250, repeats: int = 3) -> list[dict]:
    """S3Gen seconds for `tokens` random speech tokens at each speed (median of `repeats`, after a warm-up)."""
    from ..engine.rng import RequestRNG
    from ..random_checkpoint import synthetic_voice
    from .offline import _timed
    voice = tts.prepare_voice(synthetic_voice(), sample_rate=SR)
    gen = torch.Generator().manual_seed(0)
    speech = torch.randint(0, 6561, (tokens,), generator=gen).to(tts.device)

    def once(speed):
        wav, seconds = _timed(tts.device, lambda: tts.audio_runner.synthesize(speech, voice, RequestRNG(1, tts.device),
                                                                               speed=speed))
        return seconds, wav.shape[-1] / SR
    rows = []
    for speed in speeds:
        once(speed)
        runs = [once(speed) for _ in range(repeats)]
        rows.append({"speed": speed, "s3gen_s": statistics.median(r[0] for r in runs), "audio_s": runs[0][1]})
    base = next(r["s3gen_s"] for r in rows if r["speed"] == 1.0)
    for r in rows:
        r["vs_speed_1"] = r["s3gen_s"] / base
        r["rtf"] = r["s3gen_s"] / r["audio_s"]
    return rows


def run_speed_bench(model: str, device: str, speeds=SPEEDS, repeats: int = 3, tokens: int = 250) -> dict:
    """Both measurements at `speeds` (1.0 is always added: the others are reported against it)."""
    from ..audio.speed import check_speed
    from ..tts import TTS
    speeds = sorted({1.0, *(check_speed(s) for s in speeds)})
    tts = TTS.from_dir(model, device=device, watermark=False)
    try:
        name = torch.cuda.get_device_name() if tts.device.type == "cuda" else "cpu"
        return {"device": name, "family": tts.family.name, "plan": tts.plan.name, "tokens": tokens,
                "quality": pitch_and_length(speeds), "cost": cost(tts, speeds, tokens=tokens, repeats=repeats)}
    finally:
        tts.close()


def markdown(res: dict) -> str:
    cost_by = {r["speed"]: r for r in res["cost"]}
    lines = [f"`speed` on {res['device']} ({res['family']} model, plan {res['plan']}): S3Gen for {res['tokens']} "
             "tokens at each speed; pitch and length of the mel stretch on a test signal of known pitch "
             "(Griffin-Lim on both sides), beside resampling.", "",
             "| speed | pitch change (mel stretch) | length vs source / speed | pitch change (resampling) "
             "| S3Gen | vs speed 1 | audio |", "|---|---|---|---|---|---|---|"]
    for q in res["quality"]:
        c = cost_by.get(q["speed"], {})
        lines.append(f"| {q['speed']:g} | {q['pitch_cents']:+.0f} cents | {q['length_ratio']:.3f} | "
                     f"{q['resampled_pitch_cents']:+.0f} cents | {c.get('s3gen_s', 0) * 1e3:.0f} ms | "
                     f"{c.get('vs_speed_1', 0):.2f}× | {c.get('audio_s', 0):.1f} s |")
    return "\n".join(lines) + "\n"
