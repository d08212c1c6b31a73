"""HiFT over a long clip a run of mel frames at a time, with the same result as in one piece: the vocoder's
activations (64 channels at 120 columns a frame in its last stage, ~0.3 GB in fp32 for 30 s) stop growing with
the clip's length.

Exact, not cross-faded (unlike streaming's windows and `MemoryPlan.vocoder_window_s`): what is global stays
global — the F0 predictor, the source's cumulative phase, the source's STFT and the final iSTFT, each a few
MB — and only the upsampler, whose every layer sees a bounded number of neighbouring frames, runs by runs.
Each run is computed with `HALO_FRAMES` frames either side (more than the upsampler's reach, about 14 frames)
and only its own columns are kept, so a run's columns see exactly the inputs they see in one piece."""

from __future__ import annotations

import torch

HALO_FRAMES = 24
"""Mel frames computed either side of a run and dropped."""


def source_in_runs(hift, mel, phase, noise, run_samples: int):
    """`hift.source` for one row, its elementwise part a run of samples at a time: mel (1, 80, T), phase
    (1, H, 1), noise (1, H, T * spf) -> source (1, 1, T * spf)."""
    m = hift.m_source
    dt = m.l_linear.weight.dtype
    f0, phase = hift.f0(mel), phase.to(dt)
    cycles = m.cycles(f0)  # (1, H, L): the running phase, over the whole clip as in one piece
    out = f0.new_empty(f0.shape)
    for a in range(0, f0.shape[-1], run_samples):
        b = a + run_samples
        out[..., a:b] = m.excite(cycles[..., a:b], f0[..., a:b], phase, noise[..., a:b].to(dt))
    return out


def vocode_in_runs(hift, mel, phase, noise, run_frames: int = 256, halo: int = HALO_FRAMES) -> torch.Tensor:
    """HiFT's forward for one row (mel (1, 80, T), phase (1, H, 1), noise (1, H, T * spf)) -> waveform
    (1, T * spf), the upsampler `run_frames` mel frames at a time."""
    if mel.shape[0] != 1:
        raise ValueError("vocode_in_runs takes one row")
    T = mel.shape[-1]
    cols = hift.cfg.samples_per_frame // hift.cfg.hop  # spectrum columns per mel frame (120)
    source = source_in_runs(hift, mel, phase, noise, run_frames * hift.cfg.samples_per_frame)
    s = hift._source_spec(source, None)  # (1, n_fft + 2, cols T + 1)
    del source
    spec = s.new_empty(1, s.shape[1], cols * T + 1)
    for a in range(0, T, run_frames):
        b = min(T, a + run_frames)
        lo, hi = max(0, a - halo), min(T, b + halo)
        start = lo == 0
        x = hift.spectrum(mel[..., lo:hi], s[..., cols * lo: cols * hi + 1], start=start)
        first = 0 if a == 0 else cols * a + 1  # this run's columns: [cols a + 1, cols b + 1); the first run's from 0
        offset = 0 if start else cols * lo + 1  # x's column 0 in the clip's columns
        spec[..., first: cols * b + 1] = x[..., first - offset: cols * b + 1 - offset]
    return hift.waveform(spec, T)
