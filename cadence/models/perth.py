"""The Perth implicit watermark (`resemble-perth` 1.0.1, the mark the reference puts on every output): its encoder
network and the spectral round trip around it, computed with the weights that package ships.

Perth works on a 32 kHz signal's STFT (2048-point Hann window, hop 320): magnitudes in dB normalised to [0, ~1]
over a floor of 1e-9, a residual the network adds to the bins below 2 kHz on frames loud enough to carry it, then
the spectrum rebuilt from magnitude and phase and inverted. Above those bins the magnitude goes through dB and back
unchanged, so the spectrum there is the STFT's own (scaled only where its magnitude is below the floor or above
the cap of the dB round trip, as Perth's clamps do): this module computes the magnitude-phase round trip for the
marked band only, and skips the complex exponentials of the other seven eighths of the bins, which are most of
Perth's time. The result is Perth's to float rounding (tested against the package)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SAMPLE_RATE = 32000
N_FFT = 2048
HOP = 320
HIDDEN = 256
MAG_FLOOR = 1e-9
MIN_DB = 20 * math.log10(MAG_FLOOR)  # -180 dB: normalised 0
SPAN_DB = -MIN_DB + 15.0  # 15 dB of headroom above 0 dBFS: normalised 1
MAX_DB = 200.0  # Perth caps the rebuilt magnitude at 10 ** (200 / 20)
MARK_HZ = 2000.0
SUBBAND = round((N_FFT // 2 + 1) * MARK_HZ / (SAMPLE_RATE / 2))  # 128 bins carry the mark
LOUD_FRAME = 0.05  # a frame carries the mark when its summed magnitudes exceed this share of the loudest frame's


class _Conv(nn.Module):
    """Conv1d with "same" padding and, but for the last layer, a leaky ReLU (slope 0.01)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, act: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(channels_in, channels_out, kernel, padding=(kernel - 1) // 2)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.leaky_relu(x) if self.act else x


class PerthEncoder(nn.Module):
    """The residual Perth adds to the normalised magnitudes of the marked band."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(_Conv(SUBBAND, HIDDEN, 1), *[_Conv(HIDDEN, HIDDEN, 7) for _ in range(5)],
                                    _Conv(HIDDEN, SUBBAND, 1, act=False))

    def forward(self, norm: torch.Tensor) -> torch.Tensor:
        """norm (B, F, T) normalised dB magnitudes -> residual (B, SUBBAND, T), zero on quiet frames."""
        loudness = norm.sum(dim=1)  # (B, T)
        loud = (loudness > loudness.max(dim=1, keepdim=True).values * LOUD_FRAME).to(norm.dtype)
        return self.layers(norm[:, :SUBBAND]) * loud[:, None]


class PerthMark(nn.Module):
    """A 32 kHz signal -> the same signal watermarked (`apply`), trimmed to whole hops as Perth's inverse STFT is."""

    def __init__(self):
        super().__init__()
        self.encoder = PerthEncoder()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        """signal (L,) float32 at 32 kHz -> marked (HOP * (L // HOP),)."""
        spec = torch.stft(signal, N_FFT, HOP, N_FFT, self.window, center=True, pad_mode="reflect",
                          return_complex=True)  # (F, T) with F = N_FFT // 2 + 1
        mag = spec.abs()
        norm = (20 * torch.log10(mag.clamp(min=MAG_FLOOR)) - MIN_DB) / SPAN_DB
        residual = self.encoder(norm[None])[0]  # (SUBBAND, T)
        # the marked band: Perth's rebuild from the marked magnitude and the original phase
        band_db = (norm[:SUBBAND] + residual) * SPAN_DB + MIN_DB
        band = torch.polar(10 ** (band_db / 20).clamp(max=MAX_DB / 20), spec[:SUBBAND].angle())
        # above it: the spectrum itself, but where Perth's dB round trip clamps the magnitude (a zero bin, whose
        # phase Perth takes as 0, comes back as the floor); no bin of audio in [-1, 1] reaches the cap
        rest, rest_mag = spec[SUBBAND:], mag[SUBBAND:]
        cap = 10 ** (MAX_DB / 20)
        if bool(((rest_mag < MAG_FLOOR) | (rest_mag > cap)).any()):
            kept = rest_mag.clamp(MAG_FLOOR, cap)
            spec[SUBBAND:] = torch.where(rest_mag > 0, rest * (kept / rest_mag.clamp(min=torch.finfo(mag.dtype).tiny)),
                                         torch.full_like(rest, MAG_FLOOR))
        spec[:SUBBAND] = band
        return torch.istft(spec, N_FFT, HOP, N_FFT, self.window, center=True)
