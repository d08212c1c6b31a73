"""HiFT vocoder: an F0 predictor drives a harmonic-plus-noise source; a HiFi-GAN style upsampler with
Snake activations, fused with the source's STFT, predicts magnitude and phase for a 16-point iSTFT."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ...layers.snake import snake


@dataclass(frozen=True)
class HiFTConfig:
    mel_dim: int = 80
    base_channels: int = 512
    n_harmonics: int = 8
    sample_rate: int = 24000
    sine_amp: float = 0.1
    noise_std: float = 0.003
    voiced_threshold: float = 10.0
    upsample_rates: tuple = (8, 5, 3)
    upsample_kernels: tuple = (16, 11, 7)
    n_fft: int = 16
    hop: int = 4
    resblock_kernels: tuple = (3, 7, 11)
    resblock_dilations: tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_kernels: tuple = (7, 7, 11)
    source_dilations: tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    f0_channels: int = 512
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99

    @property
    def samples_per_frame(self) -> int:
        return int(np.prod(self.upsample_rates)) * self.hop


class Snake(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x, mask=None):
        """Snake of x (B, C, T), or of x * mask (B, 1, T)."""
        return snake(x, self.alpha, mask)


def _pad(k: int, d: int = 1) -> int:
    return (k * d - d) // 2


class ResBlock(nn.Module):
    def __init__(self, ch: int, k: int, dilations):
        super().__init__()
        self.convs1 = nn.ModuleList(weight_norm(nn.Conv1d(ch, ch, k, dilation=d, padding=_pad(k, d))) for d in dilations)
        self.convs2 = nn.ModuleList(weight_norm(nn.Conv1d(ch, ch, k, padding=_pad(k))) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(ch) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(ch) for _ in dilations)

    def forward(self, x, mask=None):
        """mask (B, 1, T) zeroes padded frames of a batch between convolutions, so each row's real frames
        see zeros past their end exactly as a lone row does (Snake keeps 0 at 0)."""
        if mask is not None:
            x = x * mask
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            h = c2(a2(c1(a1(x)), mask))
            x = x + h if mask is None else torch.addcmul(x, h, mask)
        return x


class F0Predictor(nn.Module):
    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        layers = []
        for i in range(5):
            layers += [weight_norm(nn.Conv1d(cfg.mel_dim if i == 0 else cfg.f0_channels, cfg.f0_channels, 3, padding=1)),
                       nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cfg.f0_channels, 1)

    def forward(self, mel, mask=None):  # (B, 80, T), mask (B, 1, T) or None -> (B, T) Hz
        x = mel
        for layer in self.condnet:
            x = layer(x)
            if mask is not None and isinstance(layer, nn.ELU):
                x = x * mask
        return self.classifier(x.transpose(1, 2)).squeeze(-1).abs()


class SourceModule(nn.Module):
    """Harmonic source: sines at F0 × (1..9) with a random start phase, noise where unvoiced,
    merged to one channel by a linear layer and tanh."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        self.l_linear = nn.Linear(cfg.n_harmonics + 1, 1)

    def cycles(self, f0):
        """f0 (B, 1, L) Hz -> cumulative cycles of each harmonic (B, H, L)."""
        c = self.cfg
        harmonics = torch.arange(1, c.n_harmonics + 2, device=f0.device, dtype=f0.dtype)[None, :, None]
        return torch.cumsum(f0 * harmonics / c.sample_rate, dim=-1)

    def forward(self, f0, phase, noise, offset=None):
        """f0 (B, 1, L) Hz at sample rate; phase (B, H, 1) uniform in [-pi, pi) (harmonic 0's is
        forced to 0); noise (B, H, L) standard normal; offset (B, H, 1) cycles already run before sample 0
        (streaming continues a previous window's phase). Returns (B, 1, L)."""
        cycles = self.cycles(f0) if offset is None else self.cycles(f0) + offset
        return self.excite(cycles, f0, phase, noise)

    def excite(self, cycles, f0, phase, noise):
        """The source from its harmonics' cumulative cycles (B, H, L), sample by sample (so any run of samples
        can be computed alone): f0 (B, 1, L), phase (B, H, 1), noise (B, H, L) -> (B, 1, L)."""
        c = self.cfg
        theta = 2 * np.pi * (cycles % 1)
        phase = torch.cat((torch.zeros_like(phase[:, :1]), phase[:, 1:]), dim=1)
        sines = c.sine_amp * torch.sin(theta + phase)
        voiced = (f0 > c.voiced_threshold).to(f0.dtype)
        noise_amp = voiced * c.noise_std + (1 - voiced) * c.sine_amp / 3
        sines = sines * voiced + noise_amp * noise
        return torch.tanh(self.l_linear(sines.transpose(1, 2))).transpose(1, 2)


class HiFTGenerator(nn.Module):
    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        self.f0_predictor = F0Predictor(cfg)
        self.m_source = SourceModule(cfg)
        self.conv_pre = weight_norm(nn.Conv1d(cfg.mel_dim, ch, 7, padding=3))
        self.ups = nn.ModuleList(
            weight_norm(nn.ConvTranspose1d(ch // 2 ** i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernels)))
        down_rates = np.cumprod([1] + list(cfg.upsample_rates[::-1][:-1]))[::-1]
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (u, k, d) in enumerate(zip(down_rates, cfg.source_kernels, cfg.source_dilations)):
            cout = ch // 2 ** (i + 1)
            u = int(u)
            conv = nn.Conv1d(cfg.n_fft + 2, cout, 1) if u == 1 else nn.Conv1d(cfg.n_fft + 2, cout, u * 2, u, padding=u // 2)
            self.source_downs.append(conv)
            self.source_resblocks.append(ResBlock(cout, k, d))
        self.resblocks = nn.ModuleList(
            ResBlock(ch // 2 ** (i + 1), k, d)
            for i in range(len(self.ups)) for k, d in zip(cfg.resblock_kernels, cfg.resblock_dilations))
        self.conv_post = weight_norm(nn.Conv1d(ch // 2 ** len(self.ups), cfg.n_fft + 2, 7, padding=3))
        self.register_buffer("stft_window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)

    def source(self, mel, phase, noise, mask=None):
        """mel (B, 80, T) -> source excitation (B, 1, T * samples_per_frame), in the F0 path's precision."""
        dt = self.m_source.l_linear.weight.dtype
        return self.m_source(self.f0(mel, mask), phase.to(dt), noise.to(dt))

    def f0(self, mel, mask=None):
        """mel (B, 80, T) -> F0 (B, 1, T * samples_per_frame) in Hz, each frame's value held over its samples,
        in the source's precision."""
        f0 = self.f0_predictor(mel.to(self.f0_predictor.classifier.weight.dtype), mask)
        f0 = F.interpolate(f0[:, None], scale_factor=float(self.cfg.samples_per_frame), mode="nearest")
        return f0.to(self.m_source.l_linear.weight.dtype)

    def decode(self, mel, source, frames=None):
        """mel (B, 80, T), source (B, 1, T * samples_per_frame) -> waveform (B, T * samples_per_frame).
        `frames` (B ints) marks a padded batch: row b is real for its first frames[b] mel frames; padding is
        zeroed between layers and the STFTs run per row, so each row's waveform equals the one it gets
        alone. Samples past a row's end are zero."""
        s = self._source_spec(source, frames)  # (B, n_fft + 2, 120 T + 1)
        return self.waveform(self.spectrum(mel, s, frames), mel.shape[-1], frames)

    def spectrum(self, mel, s, frames=None, start: bool = True):
        """The upsampler: mel (B, 80, T) and the source's STFT s (B, n_fft + 2, 120 T + 1) -> log-magnitude and
        phase (B, n_fft + 2, 120 T + 1), fp32. Every layer sees only nearby frames, so a run of frames can be
        computed alone from a slice of mel and s with some frames either side (`engine.vocoder_chunks`); with
        `start` False the run is not the clip's start: its last stage has no reflected first column, and s
        and the result lack that column (120 T columns)."""
        c = self.cfg
        dt = self.conv_pre.weight.dtype
        n = None if frames is None else torch.tensor(frames, device=mel.device)
        s = s.to(dt)
        x = _masked(self.conv_pre(_masked(mel.to(dt), n)), n)
        n_k = len(c.resblock_kernels)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, c.lrelu_slope))
            last = i == len(self.ups) - 1
            if last and start:
                x = F.pad(x, (1, 0), mode="reflect")
            elif last:
                s = s[..., 1:]
            if n is not None:  # real frames at this resolution: T * (upsampling so far), +1 for the pad
                n_i = n * int(np.prod(c.upsample_rates[: i + 1])) + int(last)
                m = (torch.arange(x.shape[-1], device=x.device)[None] < n_i[:, None])[:, None].to(x.dtype)
                x = x * m
            else:
                m = None
            x = x + self.source_resblocks[i](self.source_downs[i](s), m)
            acc = self.resblocks[i * n_k](x, m)
            for j in range(1, n_k):
                acc += self.resblocks[i * n_k + j](x, m)
            x = acc.div_(n_k)
        return self.conv_post(F.leaky_relu(x)).float()  # the iSTFT runs in fp32

    def waveform(self, x, mel_frames: int, frames=None):
        """`spectrum`'s output (B, n_fft + 2, 120 T + 1) -> waveform (B, T * samples_per_frame) by the iSTFT;
        `frames` as in `decode`."""
        c = self.cfg
        half = c.n_fft // 2 + 1
        magnitude = torch.exp(x[:, :half]).clamp(max=1e2)
        phase = torch.sin(x[:, half:])
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        if frames is None:
            wav = torch.istft(spec, c.n_fft, c.hop, c.n_fft, window=self.stft_window)
        else:  # per row over its own spectrogram frames: the overlap-add edge is the row's own end
            spf = c.samples_per_frame
            wav = spec.real.new_zeros(spec.shape[0], mel_frames * spf)
            for b, f in enumerate(frames):
                wav[b, : f * spf] = torch.istft(spec[b, :, : f * spf // c.hop + 1], c.n_fft, c.hop, c.n_fft,
                                                window=self.stft_window)
        return wav.clamp(-c.audio_limit, c.audio_limit)

    def _source_spec(self, source, frames):
        c = self.cfg

        def stft(x):
            spec = torch.view_as_real(torch.stft(x.float(), c.n_fft, c.hop, c.n_fft, window=self.stft_window,
                                                 return_complex=True))
            return torch.cat((spec[..., 0], spec[..., 1]), dim=-2)

        if frames is None:
            return stft(source[:, 0])
        spf = c.samples_per_frame
        out = source.new_zeros(source.shape[0], c.n_fft + 2, source.shape[-1] // c.hop + 1, dtype=torch.float32)
        for b, n in enumerate(frames):  # each row's reflect padding at its own end, as alone
            out[b, :, : n * spf // c.hop + 1] = stft(source[b, 0, : n * spf])
        return out

    def forward(self, mel, phase, noise, frames=None):
        """mel (B, 80, T) -> waveform (B, T * 480); `frames` as in `decode` for a padded batch."""
        n = None if frames is None else torch.tensor(frames, device=mel.device)
        f0_mask = None if n is None else (torch.arange(mel.shape[-1], device=mel.device)[None] < n[:, None])[:, None]
        if f0_mask is not None:
            f0_mask = f0_mask.to(self.f0_predictor.classifier.weight.dtype)
        return self.decode(mel, self.source(mel, phase, noise, f0_mask), frames)


def _masked(x: torch.Tensor, n: torch.Tensor | None) -> torch.Tensor:
    """Zero frames of row b at or past n[b] (x (B, C, T)); identity for an unpadded batch (n None)."""
    if n is None:
        return x
    return x * (torch.arange(x.shape[-1], device=x.device)[None] < n[:, None])[:, None].to(x.dtype)
