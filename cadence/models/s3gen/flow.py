"""Token-to-mel: token embedding → upsampling conformer → conditional flow matching, solved with a fixed
number of Euler steps on a cosine time grid, classifier-free guidance done as one doubled batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import FlowEncoderConfig, UpsampleConformerEncoder
from .estimator import ConditionalDecoder, EstimatorConfig


@dataclass(frozen=True)
class FlowConfig:
    vocab: int = 6561
    token_dim: int = 512
    mel_dim: int = 80
    spk_dim: int = 192
    token_mel_ratio: int = 2
    lookahead: int = 3
    cfg_rate: float = 0.7
    n_timesteps: int = 10
    encoder: FlowEncoderConfig = field(default_factory=FlowEncoderConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)


def cosine_time_grid(n_steps: int, device, dtype=torch.float32) -> torch.Tensor:
    t = torch.linspace(0, 1, n_steps + 1, device=device, dtype=dtype)
    return 1 - torch.cos(t * 0.5 * torch.pi)


class CFMDecoder(nn.Module):
    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.estimator = ConditionalDecoder(cfg.estimator)

    @staticmethod
    def initial_noise(randn, mel_dim: int, frames: int, new_frames: int) -> torch.Tensor:
        """The solve's starting noise (1, mel_dim, frames) from `randn(shape)`, drawn as the reference does:
        one draw over every frame."""
        return randn((1, mel_dim, frames))

    def solve(self, noise, mu, mask, spks, cond, n_steps: int):
        """Euler integration from noise (B, 80, T) to mel."""
        t_grid = cosine_time_grid(n_steps, mu.device, torch.float32).to(mu.dtype)
        guided = self.guided_inputs(mu, mask, spks, cond)
        x = noise
        for i in range(n_steps):
            x = self.step(x, t_grid[i:i + 1], t_grid[i + 1:i + 2], *guided)
        return x

    @staticmethod
    def guided_inputs(mu, mask, spks, cond):
        """The conditional rows and the unconditional ones (mu, speaker and prompt zeroed) as one batch of 2B:
        (mu2, mask2, spks2, cond2)."""
        return (torch.cat((mu, torch.zeros_like(mu))), torch.cat((mask, mask)),
                torch.cat((spks, torch.zeros_like(spks))), torch.cat((cond, torch.zeros_like(cond))))

    def step(self, x, t, r, mu2, mask2, spks2, cond2):
        """One Euler step of x (B, 80, T) from time t to r ((1,) tensors) with classifier-free guidance."""
        B, rate = x.shape[0], self.cfg.cfg_rate
        v = self.estimator(torch.cat((x, x)), mask2, mu2, t.expand(2 * B), spks2, cond2)
        return x + (r - t) * ((1.0 + rate) * v[:B] - rate * v[B:])


class MeanFlowDecoder(CFMDecoder):
    """Turbo's distilled CFM: a linear time grid (2 steps by default), each Euler step from t to r with one
    estimator pass that is told both times, and no classifier-free guidance (it was distilled with it)."""

    @staticmethod
    def initial_noise(randn, mel_dim: int, frames: int, new_frames: int) -> torch.Tensor:
        """Turbo's reference draws the new frames' noise first, then noise over every frame, and lays the first
        over the second's last `new_frames`."""
        new = randn((1, mel_dim, new_frames))
        noise = randn((1, mel_dim, frames))
        noise[..., frames - new_frames:] = new
        return noise

    def solve(self, noise, mu, mask, spks, cond, n_steps: int):
        t_grid = torch.linspace(0, 1, n_steps + 1, device=mu.device, dtype=torch.float32).to(mu.dtype)
        x = noise
        for i in range(n_steps):
            x = self.step(x, t_grid[i:i + 1], t_grid[i + 1:i + 2], mu, mask, spks, cond)
        return x

    @staticmethod
    def guided_inputs(mu, mask, spks, cond):
        """No CFG: the inputs as they are."""
        return mu, mask, spks, cond

    def step(self, x, t, r, mu, mask, spks, cond):
        """One Euler step of x (B, 80, T) from time t to r ((1,) tensors)."""
        B = x.shape[0]
        return x + (r - t) * self.estimator(x, mask, mu, t.expand(B), spks, cond, r.expand(B))


class CausalFlow(nn.Module):
    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab, cfg.token_dim)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_dim, cfg.mel_dim)
        self.encoder = UpsampleConformerEncoder(cfg.encoder)
        self.encoder_proj = nn.Linear(cfg.encoder.dim, cfg.mel_dim)
        self.decoder = (MeanFlowDecoder if cfg.estimator.meanflow else CFMDecoder)(cfg)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor, finalize: bool = True):
        """tokens (B, T) prompt+new speech tokens, lengths (B,) -> mu (B, 80, 2T'), mask (B, 1, 2T').
        With finalize=False the last `lookahead` tokens only serve as right context."""
        mask = (torch.arange(tokens.shape[1], device=tokens.device)[None] < lengths[:, None])
        x = self.input_embedding(tokens.long()) * mask[..., None].to(self.input_embedding.weight.dtype)
        h, hmask = self.encoder(x, lengths)
        if not finalize:
            cut = self.cfg.lookahead * self.cfg.token_mel_ratio
            h, hmask = h[:, :-cut], hmask[..., :-cut]
        return self.encoder_proj(h).transpose(1, 2), hmask.to(h.dtype)

    def speaker(self, xvector: torch.Tensor) -> torch.Tensor:
        return self.spk_embed_affine_layer(F.normalize(xvector, dim=1))

    def solve_padded(self, tokens, lengths, frames, noise, cond, xvector, n_steps: int, solver=None):
        """A padded batch of token sequences, each with its conditioning frames: tokens (B, T), lengths (B,),
        frames (B,) frames to solve per row (the rest, e.g. lookahead frames, is masked), noise and cond
        (B, 80, ratio*T), xvector (B, 192) -> mel (B, 80, ratio*T), row b valid up to frames[b]. `solver`
        replaces `decoder.solve` (the engine's CUDA graphs)."""
        mu, _ = self.encode(tokens, lengths)
        mask = (torch.arange(mu.shape[-1], device=mu.device)[None] < frames[:, None])[:, None].to(mu.dtype)
        return (solver or self.decoder.solve)(noise, mu, mask, self.speaker(xvector).to(mu.dtype), cond, n_steps)

    def forward(self, tokens, lengths, prompt_feat, xvector, noise, finalize: bool = True,
                n_steps: int | None = None, solver=None):
        """tokens (B, T) with the voice's prompt tokens first; prompt_feat (B, Tp, 80); xvector (B, 192);
        noise (B, 80, 2T) -> mel of the new frames (B, 80, 2T - Tp). `solver` replaces `decoder.solve`
        with a function of the same signature (the engine passes its CUDA-graph solver)."""
        mu, mask = self.encode(tokens, lengths, finalize)
        n_prompt = prompt_feat.shape[1]
        cond = torch.zeros_like(mu)
        cond[:, :, :n_prompt] = prompt_feat.transpose(1, 2).to(mu.dtype)
        mel = (solver or self.decoder.solve)(noise[..., :mu.shape[-1]].to(mu.dtype), mu, mask, self.speaker(xvector).to(mu.dtype),
                                 cond, n_steps or self.cfg.n_timesteps)
        return mel[:, :, n_prompt:]

