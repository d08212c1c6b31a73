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
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..voices.voice import Voice
from .rng import RequestRNG

HOLD_FRAMES = 8  # mel frames (160 ms) held back each window and cross-faded into the next
WINDOW_TOKENS = (16, 24, 48, 96)  # new tokens per window: a small first chunk, then larger ones


@dataclass
class StreamState:
    voice: Voice
    rng: RequestRNG
    mel: torch.Tensor | None = None  # (1, 80, E) generated mel frames sent through the vocoder so far
    noise: torch.Tensor | None = None  # (1, 80, F) CFM noise of every frame drawn so far, prompt included
    tokens_rendered: int = 0
    windows: int = 0
    voc_start: int = 0  # first mel frame of the next vocoder window (the held-back overlap)
    tail: np.ndarray | None = None  # held-back samples of the previous window
    phase: torch.Tensor | None = None  # (1, H, 1) the request's random harmonic start phases
    offset: torch.Tensor | None = None  # (1, H, 1) harmonic cycles elapsed before sample voc_start * 480
    src_noise: torch.Tensor | None = None  # (1, H, HOLD_FRAMES * 480) source noise of the overlap
    timings: dict = field(default_factory=dict)

    def next_window(self) -> int:
        return WINDOW_TOKENS[min(self.windows, len(WINDOW_TOKENS) - 1)]


@torch.inference_mode()
def _flow_window(runner, st: StreamState, tokens: list[int], final: bool) -> None:
    flow, dev, dt = runner.s3gen.flow, runner.device, runner.flow_dtype
    v = st.voice
    P = v.prompt_feat.shape[1]
    full = torch.cat((v.prompt_tokens.to(dev), torch.tensor(tokens, device=dev).view(1, -1)), dim=1)
    mu, mask = flow.encode(full, torch.tensor([full.shape[1]], device=dev), finalize=final)
    F_all = mu.shape[-1]
    E = 0 if st.mel is None else st.mel.shape[-1]
    if F_all <= P + E:
        return
    have = 0 if st.noise is None else st.noise.shape[-1]
    if F_all > have:  # noise of new frames only: frames already drawn keep theirs
        more = torch.randn((1, flow.cfg.mel_dim, F_all - have), generator=st.rng.device,
                           device=st.rng.device.device).to(dev)
        st.noise = more if st.noise is None else torch.cat((st.noise, more), dim=-1)
    cond = torch.zeros_like(mu)
    cond[:, :, :P] = v.prompt_feat.transpose(1, 2).to(dt)
    if E:
        cond[:, :, P:P + E] = st.mel.to(dt)
    solve = runner.cfm_graphs.solve if runner.cfm_graphs is not None else flow.decoder.solve
    x = solve(st.noise[..., :F_all].to(dt), mu, mask, flow.speaker(v.xvector.to(dt)).to(dt), cond,
              flow.cfg.n_timesteps)
    new = x[:, :, P + E:].float()
    st.mel = new if st.mel is None else torch.cat((st.mel, new), dim=-1)


@torch.inference_mode()
def _vocode_window(runner, st: StreamState, final: bool) -> np.ndarray:
    hift = runner.s3gen.mel2wav
    c = hift.cfg
    spf, n = c.samples_per_frame, c.n_harmonics + 1
    E = 0 if st.mel is None else st.mel.shape[-1]
    a = st.voc_start
    if E - a <= (0 if final else HOLD_FRAMES):
        return np.zeros(0, np.float32)
    if st.phase is None:  # drawn as the single-request path draws it: on the host, Uniform(-pi, pi)
        st.phase = (-math.pi + torch.rand((1, n, 1), generator=st.rng.host) * 2 * math.pi).to(runner.device)
        st.offset = torch.zeros(1, n, 1, device=runner.device)
    L = (E - a) * spf
    reuse = 0 if st.src_noise is None else st.src_noise.shape[-1]
    fresh = torch.randn((1, n, L - reuse), generator=st.rng.device, device=st.rng.device.device).to(runner.device)
    noise = fresh if reuse == 0 else torch.cat((st.src_noise, fresh), dim=-1)
    mel = st.mel[:, :, a:E].to(runner.device)
    f0 = hift.f0_predictor(mel.to(hift.f0_predictor.classifier.weight.dtype))
    f0 = F.interpolate(f0[:, None], scale_factor=float(spf), mode="nearest")
    sdt = hift.m_source.l_linear.weight.dtype
    source = hift.m_source(f0.to(sdt), st.phase.to(sdt), noise.to(sdt), st.offset.to(sdt))
    wav = hift.decode(mel, source).float()[0].cpu().numpy()
    if st.tail is not None:  # cross-fade the previous window's held-back edge into this window's version
        k = st.tail.size
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k, dtype=np.float32)))
        wav[:k] = st.tail * (1 - ramp) + wav[:k] * ramp
    if a == 0:  # the very start: silence then fade in, as the single-request path does
        fade = runner.s3gen.trim_fade.cpu().numpy()
        k = min(fade.size, wav.size)
        wav[:k] *= fade[:k]
    if final:
        st.tail = None
        st.voc_start = E
        return wav
    hold = (E - HOLD_FRAMES - a) * spf  # this window's samples sent now; the rest waits for right context
    st.offset = st.offset + hift.m_source.cycles(f0.to(sdt))[..., hold - 1:hold].float()
    st.src_noise = noise[..., hold:]
    st.tail = wav[hold:].copy()
    st.voc_start = E - HOLD_FRAMES
    return wav[:hold]


def render_window(runner, st: StreamState, tokens: list[int], final: bool) -> np.ndarray:
    """Tokens so far (clean speech tokens) -> the next samples to play; `final` flushes everything."""
    if tokens:
        _flow_window(runner, st, tokens, final)
    st.tokens_rendered = len(tokens)
    st.windows += 1
    return _vocode_window(runner, st, final)
