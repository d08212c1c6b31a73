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


def read_audio(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32 (at most its first `max_seconds`)."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path} is a directory, not an audio file")
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    return decode_audio(path.read_bytes(), path.name, max_seconds)


def decode_audio(data: bytes, name: str, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Encoded audio -> (mono float32, rate): wav/flac/ogg/mp3 through libsndfile, anything else FFmpeg reads
    (m4a/AAC, webm, ...) through PyAV. With `max_seconds`, decoding stops there: an hour-long file costs what
    its first seconds cost."""
    import io
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            frames = -1 if max_seconds is None else int(max_seconds * f.samplerate)
            return to_mono(f.read(frames=frames, dtype="float32", always_2d=True)), int(f.samplerate)
    except Exception:  # noqa: BLE001 - libsndfile could not read it: try FFmpeg
        pass
    try:
        import av
        with av.open(io.BytesIO(data)) as c:
            stream = c.streams.audio[0]
            limit = None if max_seconds is None else int(max_seconds * stream.rate)
            to_flt = av.AudioResampler(format="flt", layout="mono", rate=stream.rate)
            got, frames = 0, []
            for frame in c.decode(stream):
                for out in to_flt.resample(frame):
                    frames.append(out.to_ndarray().reshape(-1))
                    got += frames[-1].size
                if limit is not None and got >= limit:
                    break
            wav = np.concatenate(frames) if frames else np.zeros(0, np.float32)
            return wav[:limit].astype(np.float32), int(stream.rate)
    except Exception as exc:  # noqa: BLE001 - PyAV raises several types
        raise AudioError(f"cannot decode audio {name}: not a format libsndfile or FFmpeg reads") from exc


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
