"""S3 speech tokenizer v2 (25 Hz): a Whisper-style audio encoder with FSMN-augmented rotary attention and
a finite-scalar quantiser (8 dims × 3 levels = 6561 codes)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class S3TokenizerConfig:
    n_mels: int = 128
    dim: int = 1280
    heads: int = 20
    n_layers: int = 6
    fsmn_kernel: int = 31
    n_fft: int = 400
    hop: int = 160
    fsq_dims: int = 8
    fsq_levels: int = 3


def _rotary_tables(head_dim: int, length: int, device):
    freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=device)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device).float(), freqs)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()  # (T, head_dim)


class FSMNAttention(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.heads = cfg.heads
        self.query = nn.Linear(cfg.dim, cfg.dim)
        self.key = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.value = nn.Linear(cfg.dim, cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.fsmn_block = nn.Conv1d(cfg.dim, cfg.dim, cfg.fsmn_kernel, groups=cfg.dim, bias=False)
        self.pad = ((cfg.fsmn_kernel - 1) // 2, cfg.fsmn_kernel - 1 - (cfg.fsmn_kernel - 1) // 2)

    def forward(self, x, bias, frame_mask, cos, sin):
        """x (B, T, C); bias (B, 1, 1, T) additive; frame_mask (B, T, 1)."""
        B, T, C = x.shape
        d = C // self.heads
        q = self.query(x).view(B, T, self.heads, d)
        k = self.key(x).view(B, T, self.heads, d)
        v = self.value(x)
        cos, sin = cos[None, :, None], sin[None, :, None]

        def rot(t):
            return t * cos + torch.cat((-t[..., d // 2:], t[..., :d // 2]), dim=-1) * sin

        q, k = rot(q), rot(k)
        masked_v = v * frame_mask
        memory = (self.fsmn_block(F.pad(masked_v.transpose(1, 2), self.pad)).transpose(1, 2) + masked_v) * frame_mask
        scale = d ** -0.25
        q = q.permute(0, 2, 1, 3) * scale
        k = k.permute(0, 2, 3, 1) * scale
        w = (q @ k + bias).float().softmax(-1).to(q.dtype)
        out = (w @ v.view(B, T, self.heads, d).permute(0, 2, 1, 3)).permute(0, 2, 1, 3).reshape(B, T, C)
        return self.out(out) + memory


class Block(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.attn = FSMNAttention(cfg)
        self.attn_ln = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, 4 * cfg.dim), nn.GELU(), nn.Linear(4 * cfg.dim, cfg.dim))
        self.mlp_ln = nn.LayerNorm(cfg.dim)

    def forward(self, x, bias, frame_mask, cos, sin):
        x = x + self.attn(self.attn_ln(x), bias, frame_mask, cos, sin)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.dim, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.dim, cfg.dim, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))

    def forward(self, mel, lengths):
        """mel (B, n_mels, T), lengths (B,) -> hidden (B, T/4, C), token lengths (B,)."""
        def mask_of(lens, n):
            return (torch.arange(n, device=mel.device)[None] < lens[:, None])[:, None].to(mel.dtype)

        T = mel.shape[-1]
        x = F.gelu(self.conv1(mel * mask_of(lengths, T)))
        lengths = (lengths + 2 - 2 - 1) // 2 + 1
        T = (T + 2 - 2 - 1) // 2 + 1
        x = F.gelu(self.conv2(x * mask_of(lengths, T)))
        lengths = (lengths + 2 - 2 - 1) // 2 + 1
        T = (T + 2 - 2 - 1) // 2 + 1
        mask = mask_of(lengths, T)  # (B, 1, T)
        x = x.permute(0, 2, 1)
        bias = ((1.0 - mask) * -1.0e10)[:, None]
        cos, sin = _rotary_tables(self.cfg.dim // self.cfg.heads, T, mel.device)
        for block in self.blocks:
            x = block(x, bias, mask.transpose(1, 2), cos.to(x.dtype), sin.to(x.dtype))
        return x, lengths


class FSQCodebook(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.levels = cfg.fsq_levels
        self.project_down = nn.Linear(cfg.dim, cfg.fsq_dims)


class Quantizer(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self._codebook = FSQCodebook(cfg)

    def forward(self, h):  # (B, T, C) -> (B, T) codes
        cb = self._codebook
        z = (cb.project_down(h).float().tanh() * 0.9990000128746033).round() + 1
        powers = torch.pow(cb.levels, torch.arange(z.shape[-1], device=h.device, dtype=z.dtype))
        return (z * powers).sum(-1).int()


class S3Tokenizer(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg)
        self.quantizer = Quantizer(cfg)
        # Filters and window travel in the checkpoint (`tokenizer._mel_filters`, `tokenizer.window`).
        self.register_buffer("_mel_filters", torch.zeros(cfg.n_mels, cfg.n_fft // 2 + 1))
        self.register_buffer("window", torch.zeros(cfg.n_fft))

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (1, N) at 16 kHz -> (1, n_mels, N // hop)."""
        stft = torch.stft(wav, self.cfg.n_fft, self.cfg.hop, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        log_spec = torch.clamp(self._mel_filters @ power, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0

    @torch.inference_mode()
    def forward(self, wav: torch.Tensor, max_tokens: int | None = None) -> torch.Tensor:
        """wav (1, N) 16 kHz -> speech tokens (1, T) int64 at 25 Hz."""
        return self.tokenize([wav], [max_tokens])[0]

    @torch.inference_mode()
    def tokenize(self, wavs: list[torch.Tensor], max_tokens: list[int | None]) -> list[torch.Tensor]:
        """Several 16 kHz clips (1, N_i) in one padded batch -> tokens (1, T_i) each. Each clip's log-mel is
        normalised on its own and padding is masked throughout, so a clip's tokens do not depend on its
        batch-mates."""
        mels = []
        for wav, limit in zip(wavs, max_tokens):
            mel = self.log_mel(wav.to(self.window.device))[0]
            mels.append(mel[..., : limit * 4] if limit is not None else mel)
        frames = [m.shape[-1] for m in mels]  # host-side lengths: no device sync
        batch = torch.zeros(len(mels), self.cfg.n_mels, max(frames), device=self.window.device)
        for i, m in enumerate(mels):
            batch[i, :, : m.shape[-1]] = m
        hidden, _ = self.encoder(batch.to(self.window.dtype), torch.tensor(frames).to(self.window.device))
        codes = self.quantizer(hidden).long()
        n_tokens = [((f - 1) // 2) // 2 + 1 for f in frames]  # two stride-2 convs
        return [codes[i: i + 1, :n] for i, n in enumerate(n_tokens)]
