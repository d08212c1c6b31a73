"""T3 of Chatterbox Turbo: a GPT-2 medium backbone (learned absolute positions, LayerNorm, tanh-GELU) fed
T3's own embeddings (speaker token, raw prompt speech tokens, text tokens) and read by a speech head with a
bias. No CFG pair, no perceiver, no emotion token.

Only modules and forward math live here; the KV cache and decode loop are the engine's, shared with the
Llama T3 through the same five methods (`voice_embeds`, `prefill_embeds`, `speech_step_embed`,
`forward_backbone`, `speech_logits`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers.attention import cached_attention, for_layer, layer_mask
from ..layers.decode_linear import linear_residual, norm_linear
from .t3 import SpeechLM


@dataclass(frozen=True)
class T3TurboConfig:
    """Shape of Turbo's T3. `turbo()` is the official `t3_turbo_v1` (GPT-2 medium, 24 x 1024); `tiny()` the
    same architecture, small. The text vocabulary is GPT-2's 50,257 BPE ids plus 19 added tag tokens."""

    dim: int = 1024
    n_layers: int = 24
    n_heads: int = 16
    ffn_dim: int = 4096
    ln_eps: float = 1e-5
    n_positions: int = 8196
    text_vocab: int = 50276
    speech_vocab: int = 6563
    max_speech_tokens: int = 4096
    max_text_tokens: int = 2048
    speaker_dim: int = 256
    prompt_len: int = 375
    start_speech: int = 6561
    stop_speech: int = 6562

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def turbo(cls) -> "T3TurboConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "T3TurboConfig":
        return cls(dim=64, n_layers=2, n_heads=4, ffn_dim=256, n_positions=1024, max_speech_tokens=512,
                   max_text_tokens=256, prompt_len=40)


class TransposedLinear(nn.Linear):
    """A Linear whose checkpoint tensor is stored (in, out), as GPT-2's Conv1D keeps it; the loader transposes
    it once at load so the forward is a plain Linear (and int8 and other transforms see a Linear)."""


class GPT2Attention(nn.Module):
    def __init__(self, cfg: T3TurboConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.c_attn = TransposedLinear(cfg.dim, 3 * cfg.dim)
        self.c_proj = TransposedLinear(cfg.dim, cfg.dim)

    def attend(self, qkv, k_cache, v_cache, positions, attn_mask):
        """qkv (B, T, 3C), c_attn's output -> the heads' attention output (B, T, C), before c_proj; cache and
        mask as `cached_attention` takes them."""
        B, T, _ = qkv.shape
        qkv = qkv.view(B, T, 3 * self.n_heads, self.head_dim).transpose(1, 2)  # (B, 3H, T, D)
        q, k, v = qkv.split(self.n_heads, dim=1)
        out = cached_attention(q, k, v, k_cache, v_cache, positions, attn_mask)
        return out.transpose(1, 2).reshape(B, T, -1)


class GPT2MLP(nn.Module):
    def __init__(self, cfg: T3TurboConfig):
        super().__init__()
        self.c_fc = TransposedLinear(cfg.dim, cfg.ffn_dim)
        self.c_proj = TransposedLinear(cfg.ffn_dim, cfg.dim)



class GPT2Block(nn.Module):
    def __init__(self, cfg: T3TurboConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x, k_cache, v_cache, positions, attn_mask):
        """x + attn(ln_1(x)), then + mlp(ln_2(.)); each norm runs inside its matmul and each residual add in
        the next one where the decode kernels apply (`decode_linear`), else as written."""
        qkv = norm_linear(x, self.ln_1, self.attn.c_attn)
        x = linear_residual(self.attn.attend(qkv, k_cache, v_cache, positions, attn_mask), self.attn.c_proj, x)
        h = norm_linear(x, self.ln_2, self.mlp.c_fc, gelu=True)  # GPT-2's "gelu_new" (tanh)
        return linear_residual(h, self.mlp.c_proj, x)


class GPT2Backbone(nn.Module):
    def __init__(self, cfg: T3TurboConfig):
        super().__init__()
        self.wpe = nn.Embedding(cfg.n_positions, cfg.dim)
        self.h = nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder blocks under the name the engine's transforms use (the checkpoint names them `h`)."""
        return self.h


class TurboCondEncoder(nn.Module):
    def __init__(self, cfg: T3TurboConfig):
        super().__init__()
        self.spkr_enc = nn.Linear(cfg.speaker_dim, cfg.dim)


class T3Turbo(SpeechLM):
    # How Turbo's reference samples: the repetition penalty after temperature/top-k/top-p, and the start token
    # in the penalty's history for the first step only.
    penalty_last = True
    start_in_history = False

    def __init__(self, cfg: T3TurboConfig):
        super().__init__()
        self.cfg = cfg
        self.tfmr = GPT2Backbone(cfg)
        self.cond_enc = TurboCondEncoder(cfg)
        self.text_emb = nn.Embedding(cfg.text_vocab, cfg.dim)
        self.speech_emb = nn.Embedding(cfg.speech_vocab, cfg.dim)
        self.speech_head = nn.Linear(cfg.dim, cfg.speech_vocab, bias=True)

    # In the official file but never used at inference (GPT-2's own token table, the text head): their names
    # and shapes are checked at load, their values never leave the disk.
    def unused_checkpoint_shapes(self) -> dict[str, tuple]:
        c = self.cfg
        return {"tfmr.wte.weight": (c.text_vocab, c.dim), "text_head.weight": (c.text_vocab, c.dim)}

    # --- conditioning ---------------------------------------------------------------------------
    @staticmethod
    def frame_text(ids: list[int]) -> list[int]:
        """Turbo feeds the BPE ids as they are: no start/stop text tokens."""
        return list(ids)

    def prompt_positions(self, n_text_ids: int) -> int:
        """KV positions a request's prompt takes at most: speaker, up to `prompt_len` prompt speech tokens (a
        shorter voice takes fewer), the text, the start token."""
        return 1 + self.cfg.prompt_len + n_text_ids + 1

    @property
    def max_voice_positions(self) -> int:
        """KV positions of `voice_embeds`' output at most: the speaker token and `prompt_len` prompt tokens."""
        return 1 + self.cfg.prompt_len

    def voice_embeds(self, speaker_emb: torch.Tensor, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """speaker_emb (B, 256), prompt_tokens (B, P) -> (B, 1 + P, C): the speaker token, then the prompt's
        speech-token embeddings as they are (GPT-2's positions are added inside the backbone)."""
        spk = self.cond_enc.spkr_enc(speaker_emb.view(-1, self.cfg.speaker_dim))[:, None]
        return torch.cat((spk, self.speech_emb(prompt_tokens)), dim=1)

    def prefill_embeds(self, voice: torch.Tensor, exaggeration: torch.Tensor | None, text_tokens: torch.Tensor,
                       cfg_pair: bool) -> torch.Tensor:
        """[voice | text | start-speech] as one row, (1, L, C). text_tokens (T,) are the BPE ids as they are
        (Turbo frames text with no start/stop tokens). Turbo has no emotion token and no CFG pair."""
        if cfg_pair:
            raise ValueError("Chatterbox Turbo has no classifier-free guidance: cfg_pair must be False")
        dev = text_tokens.device
        text = self.text_emb(text_tokens)[None]
        start = self.speech_emb(torch.tensor([[self.cfg.start_speech]], device=dev))
        return torch.cat((voice.to(text.dtype), text, start), dim=1)

    def speech_step_embed(self, tokens: torch.Tensor, speech_pos: torch.Tensor) -> torch.Tensor:
        """tokens (B,) -> (B, C). `speech_pos` is unused: the backbone adds absolute positions itself."""
        return self.speech_emb(tokens)

    # --- backbone -----------------------------------------------------------------------------
    def forward_backbone(self, x, k_cache, v_cache, positions, attn_mask, last: torch.Tensor | None = None):
        """x (B, T, C); k_cache/v_cache (layers, B, H, S, D); positions (T,) absolute, or (B, 1) per row;
        attn_mask as the Llama T3 takes it. Adds GPT-2's learned position of every input, runs the blocks
        and returns the final-norm hidden state of the last position (or of position last[b] in row b)."""
        x = x + self.tfmr.wpe(positions).to(x.dtype)  # (T, C) or (B, 1, C), broadcast over rows
        q_shape = (x.shape[0], self.cfg.n_heads, x.shape[1], self.cfg.head_dim)
        attn_mask = layer_mask(attn_mask, q_shape, x)  # built once, shared by all layers
        for i, block in enumerate(self.tfmr.h):
            x = block(x, k_cache[i], v_cache[i], positions, for_layer(attn_mask, i))
        return self.tfmr.ln_f(x[:, -1] if last is None else x[torch.arange(x.shape[0], device=x.device), last])

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.speech_head(hidden)
