"""S3Gen over finished token sequences: flow matching to mel, then the HiFT vocoder, with all randomness
drawn from the request's own generator (CFM noise, source phase, source noise), in the reference's order."""

from __future__ import annotations

import math

import torch

from ..models.s3gen import S3Gen
from .rng import RequestRNG
from ..voices.voice import Voice


class AudioRunner:
    def __init__(self, s3gen: S3Gen, use_graphs: bool = False):
        self.s3gen = s3gen
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
        noise = self._randn((1, self.s3gen.cfg.flow.mel_dim, full.shape[1] * self.s3gen.cfg.flow.token_mel_ratio),
                            rng)
        return self.s3gen.flow(full, lengths, v.prompt_feat.to(dt), v.xvector.to(dt), noise.to(dt), finalize,
                               n_steps, solver=self.cfm_graphs.solve if self.cfm_graphs else None).float()

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, rng: RequestRNG, fade: bool = True) -> torch.Tensor:
        """mel (1, 80, T) -> waveform (1, T * 480), float32."""
        hift = self.s3gen.mel2wav
        c = hift.cfg
        n = c.n_harmonics + 1
        # Uniform(-pi, pi) start phases, drawn on the host as the reference's torch.distributions.Uniform does.
        lo, hi = torch.tensor(-math.pi), torch.tensor(math.pi)
        phase = lo + torch.rand((mel.shape[0], n, 1), generator=rng.host) * (hi - lo)
        noise = self._randn((mel.shape[0], n, mel.shape[-1] * c.samples_per_frame), rng)
        wav = hift(mel.to(self.device), phase.to(self.device), noise).float()
        if fade:
            f = self.s3gen.trim_fade.to(wav.device)
            k = min(f.numel(), wav.shape[-1])
            wav[:, :k] = wav[:, :k] * f[:k]
        return wav

    def synthesize(self, tokens: torch.Tensor, voice: Voice, rng: RequestRNG,
                   n_steps: int | None = None) -> torch.Tensor:
        return self.vocode(self.mel(tokens, voice, rng, n_steps), rng)
