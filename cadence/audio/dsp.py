"""Signal processing the model's front ends need: mel filter banks, spectrograms, Kaldi fbank,
band-limited resampling and silence trimming. Pure torch/numpy, no librosa or torchaudio at run time;
each function reproduces the numbers of the library the checkpoints were trained against."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


def _hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    freq = np.asanyarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_region = freq >= min_log_hz
    mels = np.where(log_region, min_log_mel + np.log(np.maximum(freq, 1e-30) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asanyarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_region = mels >= min_log_mel
    return np.where(log_region, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


@lru_cache(maxsize=16)
def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                       fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters on the Slaney scale with Slaney area normalisation, (n_mels, 1 + n_fft//2)
    float32: the filters `librosa.filters.mel` returns with its defaults."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_pts = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2)
    mel_f = _mel_to_hz_slaney(mel_pts)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


def s3gen_mel(wav: torch.Tensor, sample_rate: int = 24000, n_fft: int = 1920, hop: int = 480,
              n_mels: int = 80, fmax: float = 8000.0) -> torch.Tensor:
    """Log-mel of 24 kHz audio as S3Gen's flow model sees it. wav (B, N) -> (B, n_mels, frames)."""
    if wav.dim() == 1:
        wav = wav[None]
    basis = torch.from_numpy(slaney_mel_filters(sample_rate, n_fft, n_mels, 0.0, fmax)).to(wav.device)
    pad = (n_fft - hop) // 2
    wav = F.pad(wav[:, None], (pad, pad), mode="reflect")[:, 0]
    window = torch.hann_window(n_fft, device=wav.device)
    spec = torch.stft(wav, n_fft, hop_length=hop, win_length=n_fft, window=window, center=False,
                      normalized=False, onesided=True, return_complex=True)
    spec = torch.view_as_real(spec)
    mag = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)
    return torch.log(torch.clamp(torch.matmul(basis, mag), min=1e-5))


def _kaldi_mel(f: torch.Tensor) -> torch.Tensor:
    return 1127.0 * (1.0 + f / 700.0).log()


@lru_cache(maxsize=4)
def _kaldi_mel_banks(num_bins: int, padded: int, sample_rate: float, low: float, high: float) -> torch.Tensor:
    num_fft_bins = padded // 2
    nyquist = 0.5 * sample_rate
    high = high if high > 0 else nyquist + high
    bin_width = sample_rate / padded
    mel_low = 1127.0 * math.log(1.0 + low / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    mel = _kaldi_mel(bin_width * torch.arange(num_fft_bins)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return F.pad(banks, (0, 1))  # (num_bins, padded // 2 + 1)


def kaldi_fbank(wav: torch.Tensor, sample_rate: int = 16000, num_mel_bins: int = 80) -> torch.Tensor:
    """Kaldi-style log mel filter bank energies with Kaldi's defaults (25 ms povey window, 10 ms shift,
    pre-emphasis 0.97, DC removal, snip edges, no dither): what CAMPPlus was trained on.
    wav (N,) -> (frames, num_mel_bins)."""
    wav = wav.reshape(-1).float()
    size, shift = int(sample_rate * 0.025), int(sample_rate * 0.010)
    padded = 1 << (size - 1).bit_length()
    if wav.numel() < size:
        return torch.empty(0, num_mel_bins)
    n_frames = 1 + (wav.numel() - size) // shift
    frames = wav.as_strided((n_frames, size), (shift, 1))
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = F.pad(frames[None], (1, 0), mode="replicate")[0]
    frames = frames - 0.97 * prev[:, :-1]
    window = torch.hann_window(size, periodic=False, dtype=frames.dtype, device=frames.device).pow(0.85)
    frames = F.pad(frames * window, (0, padded - size))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = _kaldi_mel_banks(num_mel_bins, padded, float(sample_rate), 20.0, 0.0).to(frames.device, frames.dtype)
    energies = torch.mm(power, banks.T)
    return torch.max(energies, torch.tensor(torch.finfo(torch.float).eps, device=frames.device)).log()


@lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99):
    base = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base).clamp(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    kernels = kernels * window * (base / orig)
    return kernels.to(torch.float32), width


def resample_sinc(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling with a Hann-windowed sinc (6 zero crossings, roll-off 0.99): the
    resampler S3Gen's voice preparation uses. wav (..., N)."""
    if orig_sr == new_sr:
        return wav
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernel, width = _sinc_kernel(orig, new)
    shape = wav.shape
    x = wav.reshape(-1, shape[-1])
    length = x.shape[-1]
    x = F.pad(x, (width, width + orig))
    out = F.conv1d(x[:, None], kernel.to(x.device, x.dtype), stride=orig)
    out = out.transpose(1, 2).reshape(x.shape[0], -1)[..., :math.ceil(new * length / orig)]
    return out.reshape(*shape[:-1], -1)


def trim_silence(wav: np.ndarray, top_db: float = 20.0, frame_length: int = 2048, hop: int = 512) -> np.ndarray:
    """Cut leading and trailing frames quieter than `top_db` below the loudest frame (frame RMS,
    centred zero-padded frames), as `librosa.effects.trim` does."""
    padded = np.pad(wav, frame_length // 2, mode="constant")
    n_frames = 1 + (len(padded) - frame_length) // hop
    frames = np.lib.stride_tricks.as_strided(
        padded, (n_frames, frame_length), (padded.strides[0] * hop, padded.strides[0]))
    power = np.mean(np.abs(frames) ** 2, axis=1)
    rms = np.sqrt(power)
    mse = rms ** 2
    amin = 1e-10
    db = 10.0 * np.log10(np.maximum(amin, mse)) - 10.0 * np.log10(np.maximum(amin, mse.max()))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return wav[:0]
    start = int(loud[0] * hop)
    end = min(len(wav), int((loud[-1] + 1) * hop))
    return wav[start:end]


def stft_power_centered(wav: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|^2 with a periodic Hann window and reflect-padded centred frames, (1 + n_fft//2, frames)."""
    pad = n_fft // 2
    x = np.pad(wav, pad, mode="reflect")
    n_frames = 1 + (len(x) - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(x, (n_frames, n_fft), (x.strides[0] * hop, x.strides[0]))
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    spec = np.fft.rfft(frames * window, axis=1).T.astype(np.complex64)
    return np.abs(spec) ** 2
