"""True streaming: S3Gen on a request's growing token sequence while T3 is still decoding.

Flow: each window encodes the tokens so far with the model's lookahead (`finalize=False`: the last 3 tokens
only serve as right context) and solves the CFM for the new frames only; the frames already sent are given to
the CFM as conditioning, like the voice prompt, so they are never re-decoded and never change. The context can
be bounded (`StreamState.prompt_keep`, `history_keep`: the end of the voice prompt and the most recent audio
sent), so a window's cost no longer grows with the stream and the first window does not carry the whole 10 s
prompt: under load, that is what time to first audio is made of.
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
from .shapes import next_pow2, round_up

HOLD_FRAMES = 8  # mel frames (160 ms) held back each window and cross-faded into the next
FRAME_BUCKET = 16  # vocoder windows are padded to a multiple of this many mel frames
TOKEN_BUCKET = 16  # flow windows are padded to a multiple of this many tokens


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
    prompt_keep: int | None = None  # voice-prompt tokens (its end) each window conditions on; None: all
    history_keep: int | None = None  # tokens of audio already sent each window conditions on; None: all
    speed: float = 1.0  # speaking rate: the vocoder reads `voc_mel`, the generated mel stretched in time
    voc_mel: torch.Tensor | None = None  # (1, 80, E') the stretched frames so far (speed != 1)


def vocoder_mel(st: StreamState, final: bool) -> torch.Tensor | None:
    """The mel the vocoder renders: the generated one, or at another speed its stretched frames so far (each
    computed once, from source frames that no later window changes)."""
    if st.speed == 1.0 or st.mel is None:
        return st.mel
    from ..audio.speed import stretch_mel, stretched_count
    have = 0 if st.voc_mel is None else st.voc_mel.shape[-1]
    want = stretched_count(st.mel.shape[-1], st.speed, final)
    if want > have:
        more = stretch_mel(st.mel, st.speed, have, want)
        st.voc_mel = more if st.voc_mel is None else torch.cat((st.voc_mel, more), dim=-1)
    return st.voc_mel


def _window(st: StreamState, tokens: list[int], final: bool, ratio: int, cut: int, dev):
    """One stream's next flow window -> (window tokens, frames to solve, context frames, context mel, noise
    positions), or None when no new frame is due.

    Full-frame space: the voice prompt's P = ratio*Tp + d frames (d: a surplus frame the reference keeps), then
    the generated frames. The window keeps the prompt's last `prompt_keep` tokens and the generated tokens from
    g0 on (the last `history_keep` tokens whose frames were all sent), as one contiguous token sequence; its
    frames map back to full-frame positions, so every frame keeps its own noise whatever is trimmed. With
    neither limit set, the window is the whole sequence so far."""
    v = st.voice
    Tp, P = v.prompt_tokens.shape[1], v.prompt_feat.shape[1]
    d = P - ratio * Tp
    E = 0 if st.mel is None else st.mel.shape[-1]
    kp = Tp if st.prompt_keep is None else min(Tp, st.prompt_keep)
    g0 = 0 if st.history_keep is None else max(0, (d + E) // ratio - st.history_keep)
    n = kp + len(tokens) - g0
    frames = ratio * n - (0 if final else cut)  # the lookahead tokens' frames wait for the next window
    ctx = ratio * kp + d + E - ratio * g0
    if not tokens or frames <= ctx:
        return None
    window_tokens = torch.cat((v.prompt_tokens[0, Tp - kp:].to(dev), torch.tensor(tokens[g0:], device=dev)))
    prompt_tail = v.prompt_feat[0, ratio * (Tp - kp): ratio * Tp].t()  # (80, ratio*kp)
    # [the surplus frame(s) ‖ the frames already sent] from index ratio*g0: slice first, copy only what is kept
    start = ratio * g0
    recent = v.prompt_feat[0, ratio * Tp + min(start, d):].t()
    if E:
        sent = st.mel[0, :, max(0, start - d):]
        recent = torch.cat((recent.to(sent.device), sent.to(recent.dtype)), dim=-1)
    context = (prompt_tail, recent)
    full = (ratio * (Tp - kp), ratio * Tp, ratio * Tp + ratio * g0, ratio * Tp + ratio * g0 + frames - ratio * kp)
    return window_tokens, frames, ctx, context, full


@torch.inference_mode()
def _flow_windows(runner, items: list[tuple[StreamState, list[int], bool]]) -> None:
    """Every item's new mel frames, the items as one padded batch (CUDA graphs when the runner has them)."""
    flow, dev, dt = runner.s3gen.flow, runner.device, runner.flow_dtype
    ratio, cut = flow.cfg.token_mel_ratio, flow.cfg.lookahead * flow.cfg.token_mel_ratio
    rows = []
    for st, tokens, final in items:
        w = _window(st, tokens, final, ratio, cut, dev)
        if w is not None:
            rows.append((st, *w))
    if not rows:
        return
    T, B = round_up(max(r[1].numel() for r in rows), TOKEN_BUCKET), len(rows)  # few encoder shapes (see FRAME_BUCKET)
    tok = torch.zeros(B, T, device=dev, dtype=torch.long)
    noise = torch.zeros(B, flow.cfg.mel_dim, ratio * T, device=dev, dtype=dt)
    cond = torch.zeros(B, flow.cfg.mel_dim, ratio * T, device=dev, dtype=dt)
    for i, (st, wt, frames, ctx, (prompt_tail, recent), (a, b, c, e)) in enumerate(rows):
        tok[i, :wt.numel()] = wt
        have = 0 if st.noise is None else st.noise.shape[-1]
        if e > have:  # noise of new frames only: frames already drawn keep theirs
            more = torch.randn((1, flow.cfg.mel_dim, e - have), generator=st.rng.device,
                               device=st.rng.device.device).to(dev)
            st.noise = more if st.noise is None else torch.cat((st.noise, more), dim=-1)
        noise[i, :, :frames] = torch.cat((st.noise[0, :, a:b], st.noise[0, :, c:e]), dim=-1).to(dt)
        k = prompt_tail.shape[-1]
        cond[i, :, :k] = prompt_tail.to(dev, dt)
        cond[i, :, k:ctx] = recent[:, : ctx - k].to(dev, dt)
    lengths = torch.tensor([r[1].numel() for r in rows], device=dev)
    frames = torch.tensor([r[2] for r in rows], device=dev)
    xvector = torch.cat([r[0].voice.xvector for r in rows]).to(dev, dt)
    x = flow.solve_padded(tok, lengths, frames, noise, cond, xvector, flow.cfg.n_timesteps,
                          solver=runner.cfm_graphs.solve if runner.cfm_graphs is not None else None)
    for i, (st, _, frames, ctx, _, _) in enumerate(rows):
        new = x[i:i + 1, :, ctx:frames].float()
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
        vm = vocoder_mel(st, final)
        E = 0 if vm is None else vm.shape[-1]
        if E - st.voc_start > (0 if final else HOLD_FRAMES):
            rows.append((j, st, final, E, vm))
    if not rows:
        return out
    # Padded to a few shapes (rows to a power of two, frames to FRAME_BUCKET): cuDNN builds its convolution plans
    # per input shape, and a batch of a new shape paid for that build (tens of ms) inside the render.
    T = round_up(max(E - st.voc_start for _, st, _, E, _ in rows), FRAME_BUCKET)
    B = next_pow2(len(rows))
    mel = torch.zeros(B, c.mel_dim, T, device=dev)
    noise = torch.zeros(B, n, T * spf, device=dev)
    for i, (_, st, _, E, vm) in enumerate(rows):
        if st.phase is None:  # drawn as the single-request path draws it: on the host, Uniform(-pi, pi)
            st.phase = (-math.pi + torch.rand((1, n, 1), generator=st.rng.host) * 2 * math.pi).to(dev)
            st.offset = torch.zeros(1, n, 1, device=dev)
        L = (E - st.voc_start) * spf
        reuse = 0 if st.src_noise is None else st.src_noise.shape[-1]
        fresh = torch.randn((1, n, L - reuse), generator=st.rng.device, device=st.rng.device.device).to(dev)
        noise[i, :, :L] = fresh[0] if reuse == 0 else torch.cat((st.src_noise, fresh), dim=-1)[0]
        mel[i, :, : E - st.voc_start] = vm[0, :, st.voc_start:E]
    frames = [E - st.voc_start for _, st, _, E, _ in rows]
    padded = frames + [1] * (B - len(rows))  # rows past the batch: one silent frame each, discarded
    fdt, sdt = hift.f0_predictor.classifier.weight.dtype, hift.m_source.l_linear.weight.dtype
    f0_mask = (torch.arange(T, device=dev)[None] < torch.tensor(padded, device=dev)[:, None])[:, None]
    f0 = hift.f0_predictor(mel.to(fdt), f0_mask.to(fdt))
    f0 = F.interpolate(f0[:, None], scale_factor=float(spf), mode="nearest").to(sdt)
    spare = [torch.zeros(B - len(rows), n, 1, device=dev)] if B > len(rows) else []
    phase = torch.cat([st.phase for _, st, *_ in rows] + spare).to(sdt)
    offset = torch.cat([st.offset for _, st, *_ in rows] + spare).to(sdt)
    source = hift.m_source(f0, phase, noise.to(sdt), offset)
    wav = hift.decode(mel, source, padded).float()
    wait_for_device(dev)
    wav = wav.cpu().numpy()
    cycles = hift.m_source.cycles(f0)
    for i, (j, st, final, E, _) in enumerate(rows):
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
