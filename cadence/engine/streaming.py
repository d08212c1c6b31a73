"""True streaming: S3Gen on a request's growing token sequence while T3 is still decoding.

Flow: each window encodes every token so far with the model's lookahead (`finalize=False`: the last 3 tokens
only serve as right context) and solves the CFM for the new frames only; the frames already sent are given to
the CFM as conditioning, like the voice prompt, so they are never re-decoded and never change.
Vocoder: each window re-runs HiFT over the last HOLD_FRAMES mel frames of the previous one plus the new
frames. The harmonic source continues the previous window's phase (cycles carried at the window start) and its
noise, and the held-back tail of the previous window is cross-faded with the same samples rendered with right
context, so chunk joins are sample-continuous."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..voices.voice import Voice
from .rng import RequestRNG, wait_for_device

HOLD_FRAMES = 8  # mel frames (160 ms) held back each window and cross-faded into the next
WINDOW_TOKENS = (16, 24, 48, 96)  # new tokens per window: a small first chunk, then larger ones


@dataclass
class StreamState:
    voice: Voice
    rng: RequestRNG
    mel: torch.Tensor | None = None  # (1, 80, E) generated mel frames sent through the vocoder so far
    noise: torch.Tensor | None = None  # (1, 80, F) CFM noise of every frame drawn so far, prompt included
    voc_start: int = 0  # first mel frame of the next vocoder window (the held-back overlap)
    tail: np.ndarray | None = None  # held-back samples of the previous window
    phase: torch.Tensor | None = None  # (1, H, 1) the request's random harmonic start phases
    offset: torch.Tensor | None = None  # (1, H, 1) harmonic cycles elapsed before sample voc_start * 480
    src_noise: torch.Tensor | None = None  # (1, H, HOLD_FRAMES * 480) source noise of the overlap


@torch.inference_mode()
def _flow_windows(runner, items: list[tuple[StreamState, list[int], bool]]) -> None:
    """Every item's new mel frames, the items as one padded batch (one row alone takes the CUDA-graph solve)."""
    flow, dev, dt = runner.s3gen.flow, runner.device, runner.flow_dtype
    ratio, cut = flow.cfg.token_mel_ratio, flow.cfg.lookahead * flow.cfg.token_mel_ratio
    rows = []
    for st, tokens, final in items:
        n_full = st.voice.prompt_tokens.shape[1] + len(tokens)
        frames = ratio * n_full - (0 if final else cut)  # the lookahead tokens' frames wait for the next window
        E = 0 if st.mel is None else st.mel.shape[-1]
        if tokens and frames > st.voice.prompt_feat.shape[1] + E:
            rows.append((st, tokens, final, n_full, frames, E))
    if not rows:
        return
    T = max(r[3] for r in rows)
    B = len(rows)
    tok = torch.zeros(B, T, device=dev, dtype=torch.long)
    noise = torch.zeros(B, flow.cfg.mel_dim, ratio * T, device=dev, dtype=dt)
    cond = torch.zeros(B, flow.cfg.mel_dim, ratio * T, device=dev, dtype=dt)
    for i, (st, tokens, _, n_full, frames, E) in enumerate(rows):
        v = st.voice
        tok[i, :n_full] = torch.cat((v.prompt_tokens[0].to(dev), torch.tensor(tokens, device=dev)))
        have = 0 if st.noise is None else st.noise.shape[-1]
        if frames > have:  # noise of new frames only: frames already drawn keep theirs
            more = torch.randn((1, flow.cfg.mel_dim, frames - have), generator=st.rng.device,
                               device=st.rng.device.device).to(dev)
            st.noise = more if st.noise is None else torch.cat((st.noise, more), dim=-1)
        noise[i, :, :frames] = st.noise[0, :, :frames].to(dt)
        P = v.prompt_feat.shape[1]
        cond[i, :, :P] = v.prompt_feat[0].t().to(dt)
        if E:  # frames already sent condition the solve like the prompt: they are never re-decoded
            cond[i, :, P:P + E] = st.mel[0].to(dt)
    mu, _ = flow.encode(tok, torch.tensor([r[3] for r in rows], device=dev))
    valid = torch.tensor([r[4] for r in rows], device=dev)
    mask = (torch.arange(mu.shape[-1], device=dev)[None] < valid[:, None])[:, None].to(dt)
    spks = flow.speaker(torch.cat([r[0].voice.xvector for r in rows]).to(dev, dt)).to(dt)
    if B == 1:
        F1 = rows[0][4]
        solve = runner.cfm_graphs.solve if runner.cfm_graphs is not None else flow.decoder.solve
        x = solve(noise[..., :F1], mu[..., :F1], mask[..., :F1], spks, cond[..., :F1], flow.cfg.n_timesteps)
    else:
        x = flow.decoder.solve(noise[..., : mu.shape[-1]], mu, mask, spks, cond[..., : mu.shape[-1]],
                               flow.cfg.n_timesteps)
    for i, (st, _, _, _, frames, E) in enumerate(rows):
        new = x[i:i + 1, :, st.voice.prompt_feat.shape[1] + E: frames].float()
        st.mel = new if st.mel is None else torch.cat((st.mel, new), dim=-1)


@torch.inference_mode()
def _vocode_windows(runner, items: list[tuple[StreamState, bool]]) -> list[np.ndarray]:
    """Every item's next samples, their vocoder windows as one padded batch."""
    hift = runner.s3gen.mel2wav
    c = hift.cfg
    spf, n, dev = c.samples_per_frame, c.n_harmonics + 1, runner.device
    out = [np.zeros(0, np.float32) for _ in items]
    rows = []
    for j, (st, final) in enumerate(items):
        E = 0 if st.mel is None else st.mel.shape[-1]
        if E - st.voc_start > (0 if final else HOLD_FRAMES):
            rows.append((j, st, final, E))
    if not rows:
        return out
    T = max(E - st.voc_start for _, st, _, E in rows)
    B = len(rows)
    mel = torch.zeros(B, c.mel_dim, T, device=dev)
    noise = torch.zeros(B, n, T * spf, device=dev)
    for i, (_, st, _, E) in enumerate(rows):
        if st.phase is None:  # drawn as the single-request path draws it: on the host, Uniform(-pi, pi)
            st.phase = (-math.pi + torch.rand((1, n, 1), generator=st.rng.host) * 2 * math.pi).to(dev)
            st.offset = torch.zeros(1, n, 1, device=dev)
        L = (E - st.voc_start) * spf
        reuse = 0 if st.src_noise is None else st.src_noise.shape[-1]
        fresh = torch.randn((1, n, L - reuse), generator=st.rng.device, device=st.rng.device.device).to(dev)
        noise[i, :, :L] = fresh[0] if reuse == 0 else torch.cat((st.src_noise, fresh), dim=-1)[0]
        mel[i, :, : E - st.voc_start] = st.mel[0, :, st.voc_start:E]
    frames = [E - st.voc_start for _, st, _, E in rows]
    padded = None if B == 1 else frames
    fdt, sdt = hift.f0_predictor.classifier.weight.dtype, hift.m_source.l_linear.weight.dtype
    f0_mask = None if B == 1 else (torch.arange(T, device=dev)[None] < torch.tensor(frames, device=dev)[:, None])[:, None]
    f0 = hift.f0_predictor(mel.to(fdt), None if f0_mask is None else f0_mask.to(fdt))
    f0 = F.interpolate(f0[:, None], scale_factor=float(spf), mode="nearest").to(sdt)
    phase = torch.cat([st.phase for _, st, _, _ in rows]).to(sdt)
    offset = torch.cat([st.offset for _, st, _, _ in rows]).to(sdt)
    source = hift.m_source(f0, phase, noise.to(sdt), offset)
    wav = hift.decode(mel, source, padded).float()
    wait_for_device(dev)
    wav = wav.cpu().numpy()
    cycles = hift.m_source.cycles(f0)
    for i, (j, st, final, E) in enumerate(rows):
        out[j] = _emit(runner, st, wav[i, : frames[i] * spf].copy(), final, E, cycles[i:i + 1], noise[i:i + 1])
    return out


def _emit(runner, st: StreamState, wav: np.ndarray, final: bool, E: int, cycles, noise) -> np.ndarray:
    if st.tail is not None:  # cross-fade the previous window's held-back edge into this window's version
        k = st.tail.size
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k, dtype=np.float32))
        wav[:k] = st.tail * (1 - ramp) + wav[:k] * ramp
    if st.voc_start == 0:  # the very start: silence then fade in, as the single-request path does
        fade = runner.s3gen.trim_fade.cpu().numpy()
        k = min(fade.size, wav.size)
        wav[:k] *= fade[:k]
    if final:
        st.tail, st.voc_start = None, E
        return wav
    spf = runner.s3gen.mel2wav.cfg.samples_per_frame
    hold = (E - HOLD_FRAMES - st.voc_start) * spf  # sent now; the rest waits for right context
    st.offset = st.offset + cycles[..., hold - 1:hold].float()
    st.src_noise = noise[..., hold: (E - st.voc_start) * spf].clone()
    st.tail = wav[hold:].copy()
    st.voc_start = E - HOLD_FRAMES
    return wav[:hold]


def render_windows(runner, items: list[tuple[StreamState, list[int], bool]]) -> list[np.ndarray]:
    """Several streams' next windows at once: tokens so far (clean speech tokens) -> the next samples to play
    of each; `final` flushes a stream."""
    _flow_windows(runner, items)
    return _vocode_windows(runner, [(st, final) for st, _, final in items])
