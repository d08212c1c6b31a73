"""Reading reference audio (any common format, rate, channel count) and writing WAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """Unreadable, empty, silent or too-short audio."""


def to_mono(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2 and wav.shape[0] <= 8 < wav.shape[1]:  # (channels, frames), as torchaudio gives it
        wav = wav.T
    if wav.ndim == 2:  # (frames, channels)
        wav = wav.mean(axis=1)
    if wav.ndim != 1:
        raise AudioError(f"audio must be mono or (frames, channels), got shape {wav.shape}")
    return wav


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32. wav/flac/ogg through libsndfile; mp3 where libsndfile supports it."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types
        raise AudioError(f"cannot decode audio {path.name}: {exc}") from exc
    return to_mono(wav), int(sr)


def resample(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """High-quality resampling (soxr HQ), the same the reference applies when loading audio."""
    if orig_sr == new_sr:
        return wav.astype(np.float32, copy=False)
    return soxr.resample(wav, orig_sr, new_sr, quality="HQ").astype(np.float32)


def check_reference(wav: np.ndarray, sr: int, min_seconds: float = 1.0) -> None:
    if wav.size == 0:
        raise AudioError("reference audio is empty")
    if not np.all(np.isfinite(wav)):
        raise AudioError("reference audio contains NaN or infinite samples")
    seconds = wav.size / sr
    if seconds < min_seconds:
        raise AudioError(f"reference audio is too short ({seconds:.2f} s; at least {min_seconds:.1f} s needed)")
    if float(np.abs(wav).max()) < 1e-4:
        raise AudioError("reference audio is silent")


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    sf.write(str(path), np.asarray(samples, dtype=np.float32), sample_rate, subtype="PCM_16")
