"""S3Gen over finished token sequences: flow matching to mel, then the HiFT vocoder, with all randomness
drawn from the request's own generator (CFM noise, source phase, source noise), in the reference's order."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..models.s3gen import S3Gen
from .rng import RequestRNG
from .shapes import round_up
from .vocoder_chunks import vocode_in_runs
from ..voices.voice import Voice


class AudioRunner:
    graph_batches = False
    """Padded batches of finished requests replay the CFM solve's CUDA graph of their (rows, frames) bucket, as
    single requests and streaming windows do (False: eager solves, about a thousand kernel launches a batch)."""

    vocoder_run_frames: int | None = None
    """On CUDA a clip longer than twice this many mel frames is vocoded with the upsampler a run of this many
    frames at a time (`engine.vocoder_chunks`: the same waveform, activations of one run). None (the default):
    in one piece. Measured on an H100 with runs of 256 frames, Turbo's 30 s clip: peak 1322 MB instead of 1621 MB,
    but S3Gen 86-118 ms instead of 39 ms (RTF 0.0262 instead of 0.0233), so one piece stays the default."""

    def __init__(self, s3gen: S3Gen, use_graphs: bool = False, vocoder_window_frames: int | None = None):
        self.s3gen = s3gen
        self.vocoder_window_frames = vocoder_window_frames
        self.cfm_graphs = None
        if use_graphs:
            from .cfm_graph import CFMGraphs
            self.cfm_graphs = CFMGraphs(s3gen.flow.decoder)

    @property
    def device(self):
        return self.s3gen.flow.encoder_proj.weight.device

    @property
    def flow_dtype(self):
        return self.s3gen.flow.encoder_proj.weight.dtype

    def _randn(self, shape, rng: RequestRNG):
        return torch.randn(shape, generator=rng.device, device=rng.device.device).to(self.device)

    @torch.inference_mode()
    def mel(self, tokens: torch.Tensor, voice: Voice, rng: RequestRNG, n_steps: int | None = None,
            finalize: bool = True) -> torch.Tensor:
        """tokens (N,) new speech tokens -> mel (1, 80, 2N) for the new frames."""
        dev, dt = self.device, self.flow_dtype
        v = voice if voice.prompt_feat.device == dev else voice.to(dev)
        full = torch.cat((v.prompt_tokens, tokens.to(dev).view(1, -1)), dim=1)
        lengths = torch.tensor([full.shape[1]], device=dev)
        ratio = self.s3gen.cfg.flow.token_mel_ratio
        noise = self.s3gen.flow.decoder.initial_noise(lambda shape: self._randn(shape, rng), self.s3gen.cfg.flow.mel_dim,
                                                      full.shape[1] * ratio, tokens.numel() * ratio)
        return self.s3gen.flow(full, lengths, v.prompt_feat.to(dt), v.xvector.to(dt), noise.to(dt), finalize,
                               n_steps, solver=self.cfm_graphs.solve if self.cfm_graphs else None).float()

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, rng: RequestRNG, fade: bool = True) -> torch.Tensor:
        """mel (1, 80, T) -> waveform (1, T * 480), float32."""
        W = self.vocoder_window_frames
        if W and mel.shape[-1] > W and fade:
            return self._vocode_windowed(mel, rng, W)
        hift = self.s3gen.mel2wav
        c = hift.cfg
        n = c.n_harmonics + 1
        # Uniform(-pi, pi) start phases, drawn on the host as the reference's torch.distributions.Uniform does.
        lo, hi = torch.tensor(-math.pi), torch.tensor(math.pi)
        phase = lo + torch.rand((mel.shape[0], n, 1), generator=rng.host) * (hi - lo)
        noise = self._randn((mel.shape[0], n, mel.shape[-1] * c.samples_per_frame), rng)
        run = self.vocoder_run_frames
        if run and self.device.type == "cuda" and mel.shape[0] == 1 and mel.shape[-1] > 2 * run:
            wav = vocode_in_runs(hift, mel.to(self.device), phase.to(self.device), noise, run).float()
        else:
            wav = hift(mel.to(self.device), phase.to(self.device), noise).float()
        if fade:
            f = self.s3gen.trim_fade.to(wav.device)
            k = min(f.numel(), wav.shape[-1])
            wav[:, :k] = wav[:, :k] * f[:k]
        return wav

    def _vocode_windowed(self, mel: torch.Tensor, rng: RequestRNG, window: int) -> torch.Tensor:
        """The streaming vocoder over a finished mel, `window` frames at a time: activations of one window only."""
        from .streaming import StreamState, _vocode_windows
        st = StreamState(voice=None, rng=rng)
        pieces = []
        for end in range(window, mel.shape[-1], window):
            st.mel = mel[..., :end].float()
            pieces.append(_vocode_windows(self, [(st, False)])[0])
        st.mel = mel.float()
        pieces.append(_vocode_windows(self, [(st, True)])[0])
        return torch.from_numpy(np.concatenate(pieces))[None].to(self.device)

    def synthesize(self, tokens: torch.Tensor, voice: Voice, rng: RequestRNG,
                   n_steps: int | None = None, speed: float = 1.0) -> torch.Tensor:
        return self.vocode(_at_speed(self.mel(tokens, voice, rng, n_steps), speed), rng)

    # --- batches of requests ------------------------------------------------------------------------------
    @torch.inference_mode()
    def mel_batch(self, items: list[tuple[torch.Tensor, Voice, RequestRNG]], n_steps: int | None = None):
        """Several requests' (tokens, voice, rng) through the flow encoder and the CFM solve as one padded
        batch, each with its own voice prompt and noise -> a list of mels (1, 80, 2N_i)."""
        if len(items) == 1:
            return [self.mel(*items[0], n_steps)]
        dev, dt, flow = self.device, self.flow_dtype, self.s3gen.flow
        ratio, mel_dim = flow.cfg.token_mel_ratio, flow.cfg.mel_dim
        voices = [v if v.prompt_feat.device == dev else v.to(dev) for _, v, _ in items]
        fulls = [torch.cat((v.prompt_tokens[0], t.to(dev))) for (t, _, _), v in zip(items, voices)]
        T = round_up(max(f.numel() for f in fulls), 32)  # few shapes: cuDNN plans and estimator attention per shape
        lengths = torch.tensor([f.numel() for f in fulls], device=dev)
        tokens = torch.zeros(len(items), T, device=dev, dtype=torch.long)
        noise = torch.zeros(len(items), mel_dim, ratio * T, device=dev, dtype=dt)
        for i, (f, (new, _, rng)) in enumerate(zip(fulls, items)):
            tokens[i, : f.numel()] = f
            row = flow.decoder.initial_noise(lambda shape: self._randn(shape, rng), mel_dim, ratio * f.numel(),
                                             ratio * new.numel())
            noise[i, :, : ratio * f.numel()] = row[0].to(dt)
        mu, mask = flow.encode(tokens, lengths)
        cond = torch.zeros_like(mu)
        for i, v in enumerate(voices):
            cond[i, :, : v.prompt_feat.shape[1]] = v.prompt_feat[0].t().to(dt)
        spks = flow.speaker(torch.cat([v.xvector for v in voices]).to(dt)).to(dt)
        solve = self.cfm_graphs.solve if self.cfm_graphs is not None and self.graph_batches else flow.decoder.solve
        mel = solve(noise[..., : mu.shape[-1]], mu, mask, spks, cond, n_steps or flow.cfg.n_timesteps)
        return [mel[i:i + 1, :, v.prompt_feat.shape[1]: ratio * f.numel()].float()
                for i, (v, f) in enumerate(zip(voices, fulls))]

    @torch.inference_mode()
    def vocode_batch(self, mels: list[torch.Tensor], rngs: list[RequestRNG]) -> list[torch.Tensor]:
        """Several mels (1, 80, T_i) through HiFT as one padded batch -> waveforms (1, T_i * 480), each equal to
        what `vocode` gives it alone (same draws from its own generator, padding masked inside HiFT)."""
        if len(mels) == 1:
            return [self.vocode(mels[0], rngs[0])]
        hift = self.s3gen.mel2wav
        c = hift.cfg
        n, spf = c.n_harmonics + 1, c.samples_per_frame
        frames = [m.shape[-1] for m in mels]
        T = round_up(max(frames), 64)  # few shapes: cuDNN builds a convolution plan per input shape
        mel = torch.zeros(len(mels), c.mel_dim, T, device=self.device)
        phase = torch.zeros(len(mels), n, 1)
        noise = torch.zeros(len(mels), n, T * spf, device=self.device)
        lo, hi = torch.tensor(-math.pi), torch.tensor(math.pi)
        for i, (m, rng) in enumerate(zip(mels, rngs)):
            mel[i, :, : frames[i]] = m[0]
            phase[i] = lo + torch.rand((1, n, 1), generator=rng.host)[0] * (hi - lo)
            noise[i, :, : frames[i] * spf] = self._randn((1, n, frames[i] * spf), rng)[0]
        wav = hift(mel, phase.to(self.device), noise, frames=frames).float()
        f = self.s3gen.trim_fade.to(wav.device)
        out = []
        for i, t in enumerate(frames):
            w = wav[i:i + 1, : t * spf]
            k = min(f.numel(), w.shape[-1])
            w[:, :k] = w[:, :k] * f[:k]
            out.append(w)
        return out

    def synthesize_batch(self, items: list[tuple[torch.Tensor, Voice, RequestRNG]], flow_frames: int = 24000,
                         vocoder_frames: int = 6000, min_batch: int = 4, speeds: list[float] | None = None,
                         on_done: Callable[[list[int], list[torch.Tensor]], None] | None = None) -> list[torch.Tensor]:
        """Requests grouped by length into padded batches of at most `flow_frames` (flow) and `vocoder_frames`
        (HiFT) padded mel frames -> waveforms (1, samples), in the order given. Groups smaller than
        `min_batch` take the single-request path, whose CUDA-graph CFM solve beats a small eager batch.
        `speeds`: each request's speaking rate (its mel stretched before the vocoder).
        `on_done(indices, waves)`: called as each flow group's waveforms are ready (shortest requests first), so a
        caller can hand them out while the rest render: a wave of finished requests then leaves a group at a time,
        and its clients' next requests can decode beside the rest of S3Gen instead of after it."""
        ratio = self.s3gen.flow.cfg.token_mel_ratio
        order = sorted(range(len(items)), key=lambda i: int(items[i][0].numel()))
        waves: dict[int, torch.Tensor] = {}
        for group in _groups(order, lambda i: ratio * (int(items[i][0].numel()) + 160), flow_frames):
            small = len(group) < min_batch and self.cfm_graphs is not None
            mels = {i: _at_speed(m, speeds[i] if speeds else 1.0)
                    for i, m in zip(group, [self.mel(*items[i]) for i in group] if small else
                                    self.mel_batch([items[i] for i in group]))}
            for run in _groups(group, lambda i: mels[i].shape[-1], vocoder_frames):
                waves.update(zip(run, self.vocode_batch([mels[i] for i in run], [items[i][2] for i in run])))
            if on_done is not None:
                on_done(group, [waves[i] for i in group])
        return [waves[i] for i in range(len(items))]


def _at_speed(mel: torch.Tensor, speed: float) -> torch.Tensor:
    if speed == 1.0:
        return mel
    from ..audio.speed import stretch_mel
    return stretch_mel(mel, speed)


def _groups(order: list[int], size, budget: int) -> list[list[int]]:
    """Consecutive runs of `order` (sorted by length) whose padded size (count x largest) stays in budget."""
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * size(i) <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
