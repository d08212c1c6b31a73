"""T3: the text-to-speech-token model. A Llama backbone fed custom embeddings (speaker, perceiver-resampled
prompt speech, emotion, text and speech tokens with learned positions) and read by a speech head.

Only modules and forward math live here; the KV cache layout and decode loop are in `cadence.engine`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import rotary_kv
from ..layers.attention import attend_cache, attention, cached_attention, for_layer, layer_mask
from ..layers.llama_decode import linear_residual, rms_gated_linear, rms_linear


@dataclass(frozen=True)
class T3Config:
    """Shape of T3. `english()` is the official 532 M checkpoint; `tiny()` the same architecture, small."""

    dim: int = 1024
    n_layers: int = 30
    n_heads: int = 16
    ffn_dim: int = 4096
    rms_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 8192
    text_vocab: int = 704
    speech_vocab: int = 8194
    backbone_vocab: int = 8  # the Llama's own embedding: present in the checkpoint, never used
    max_text_tokens: int = 2048
    max_speech_tokens: int = 4096
    speaker_dim: int = 256
    prompt_len: int = 150
    perceiver_queries: int = 32
    perceiver_heads: int = 4
    start_text: int = 255
    stop_text: int = 0
    start_speech: int = 6561
    stop_speech: int = 6562

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def english(cls) -> "T3Config":
        return cls()

    @classmethod
    def tiny(cls, text_vocab: int = 704) -> "T3Config":
        return cls(dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_text_tokens=256, max_speech_tokens=512,
                   prompt_len=20, perceiver_queries=4, perceiver_heads=2, text_vocab=text_vocab)

    @classmethod
    def multilingual(cls) -> "T3Config":
        """Chatterbox Multilingual's T3: the original's, with the 2,454-symbol grapheme vocabulary."""
        return cls(text_vocab=2454)


def llama3_inv_freq(cfg: T3Config) -> torch.Tensor:
    """Rotary inverse frequencies with Llama 3's long-context rescaling."""
    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    low_wavelen = cfg.rope_original_context / cfg.rope_low_freq_factor
    high_wavelen = cfg.rope_original_context / cfg.rope_high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / cfg.rope_factor, inv)
    smooth = (cfg.rope_original_context / wavelen - cfg.rope_low_freq_factor) / (
        cfg.rope_high_freq_factor - cfg.rope_low_freq_factor)
    smoothed = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rotary_freqs(inv_freq: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """positions (T,) shared by all rows -> unit complex rotations (T, head_dim/2), fp32; per-row positions
    (B, T) -> (B, 1, T, head_dim/2), broadcasting over heads."""
    angles = positions.float()[..., None] * inv_freq.float()
    freqs = torch.polar(torch.ones_like(angles), angles)
    return freqs if positions.dim() == 1 else freqs[:, None]


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) whose head dims are stored as (even, odd) rotation pairs (the checkpoint's
    half-split q/k rows are interleaved at load, see LlamaAttention.pack): one complex multiply."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(xc * freqs).flatten(-2).to(x.dtype)


def interleave_rotary_rows(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Reorder each head's output rows from Llama's half-split layout (i, i + D/2) to adjacent pairs (2i, 2i+1).
    Scores q·k are unchanged because q and k are reordered alike."""
    out_dim = w.shape[0]
    perm = torch.arange(head_dim).view(2, head_dim // 2).t().reshape(-1)
    idx = (torch.arange(out_dim // head_dim)[:, None] * head_dim + perm[None]).reshape(-1)
    return w[idx]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class LlamaAttention(nn.Module):
    # Checkpoint tensors that are stored apart but computed as one matmul (see checkpoint.PACKED).
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.o_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        # Sees the rotated queries (B, H, T, D) and passes them on: where a reader of some heads' attention (the
        # multilingual end-of-speech rules, `engine.alignment_guard`) puts its tap; no weights.
        self.query_tap: nn.Module = nn.Identity()

    def pack(self, name: str, parts: list[torch.Tensor]) -> torch.Tensor:
        """Checkpoint q/k/v weights -> qkv_proj: q and k rows interleaved for the complex rotary."""
        q, k, v = parts
        return torch.cat((interleave_rotary_rows(q, self.head_dim), interleave_rotary_rows(k, self.head_dim), v))

    def attend(self, qkv, freqs, k_cache, v_cache, positions, attn_mask):
        """qkv (B, T, 3C), the projection of the normalised input -> the heads' output (B, T, C) before o_proj; the
        cache and mask arguments as `cached_attention` takes them."""
        B, T, _ = qkv.shape
        if attn_mask is not None and rotary_kv.applies(qkv, k_cache, positions):  # a decode step: one kernel
            q = self.query_tap(rotary_kv.rotate_and_write(qkv, freqs, k_cache, v_cache, positions))
            return attend_cache(q, k_cache, v_cache, attn_mask).transpose(1, 2).reshape(B, T, -1)
        qkv = qkv.view(B, T, 3 * self.n_heads, self.head_dim).transpose(1, 2)  # (B, 3H, T, D)
        qk = apply_rotary(qkv[:, : 2 * self.n_heads], freqs)  # q and k rotated in one pass
        q, k, v = self.query_tap(qk[:, : self.n_heads]), qk[:, self.n_heads:], qkv[:, 2 * self.n_heads:]
        out = cached_attention(q, k, v, k_cache, v_cache, positions, attn_mask)
        return out.transpose(1, 2).reshape(B, T, -1)


class LlamaMLP(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.dim, 2 * cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    # (applied by LlamaLayer through `llama_decode`: the norm folded into gate_up, the residual into down_proj)


class LlamaLayer(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.rms_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.rms_eps)
        self.mlp = LlamaMLP(cfg)

    def forward(self, x, freqs, k_cache, v_cache, positions, attn_mask):
        """x (B, T, C) -> (B, T, C). At one or two rows on CUDA each matmul is one fused kernel with the norm before
        it or the residual after it (`layers.llama_decode`); elsewhere the same math eagerly."""
        attn, mlp = self.self_attn, self.mlp
        qkv = rms_linear(x, self.input_layernorm, attn.qkv_proj)
        x = linear_residual(attn.attend(qkv, freqs, k_cache, v_cache, positions, attn_mask), attn.o_proj, x)
        return linear_residual(rms_gated_linear(x, self.post_attention_layernorm, mlp.gate_up_proj), mlp.down_proj, x)


class LlamaBackbone(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.backbone_vocab, cfg.dim)
        self.layers = nn.ModuleList(LlamaLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.rms_eps)


class LearnedPositions(nn.Module):
    def __init__(self, n: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(n, dim)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.emb(positions)


class PerceiverAttention(nn.Module):
    """Pre-norm multi-head attention with a residual; one instance serves both the cross- and the
    self-attention pass of the perceiver (shared weights, as trained)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, Tq, C = queries.shape
        qn, cn = self.norm(queries), self.norm(context)

        def heads(t):  # (B, T, C) -> (B, H, T, C/H)
            return t.view(B, -1, self.heads, C // self.heads).transpose(1, 2)

        out = attention(heads(self.to_q(qn)), heads(self.to_k(cn)), heads(self.to_v(cn)))
        return queries + self.proj_out(out.transpose(1, 2).reshape(B, Tq, C))


class Perceiver(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.pre_attention_query = nn.Parameter(torch.zeros(1, cfg.perceiver_queries, cfg.dim))
        self.attn = PerceiverAttention(cfg.dim, cfg.perceiver_heads)

    def forward(self, prompt_emb: torch.Tensor) -> torch.Tensor:
        """(B, P, C) prompt embeddings -> (B, Q, C) resampled."""
        q = self.pre_attention_query.expand(prompt_emb.shape[0], -1, -1)
        x = self.attn(q, prompt_emb)
        return self.attn(x, x)


class CondEncoder(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.spkr_enc = nn.Linear(cfg.speaker_dim, cfg.dim)
        self.emotion_adv_fc = nn.Linear(1, cfg.dim, bias=False)
        self.perceiver = Perceiver(cfg)


class SpeechLM(nn.Module):
    """What the engine reads of either T3 backbone (Llama or GPT-2): the precision and device of its activations
    and KV cache, its speech embedding's (the projections and head may be int8)."""

    @property
    def dtype(self) -> torch.dtype:
        return self.speech_emb.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.speech_emb.weight.device


class T3(SpeechLM):
    # How the reference samples: the repetition penalty first, with the start token in its history throughout.
    penalty_last = False
    start_in_history = True

    def __init__(self, cfg: T3Config):
        super().__init__()
        self.cfg = cfg
        self.tfmr = LlamaBackbone(cfg)
        self.cond_enc = CondEncoder(cfg)
        self.text_emb = nn.Embedding(cfg.text_vocab, cfg.dim)
        self.speech_emb = nn.Embedding(cfg.speech_vocab, cfg.dim)
        self.text_pos_emb = LearnedPositions(cfg.max_text_tokens + 2, cfg.dim)
        self.speech_pos_emb = LearnedPositions(cfg.max_speech_tokens + 4, cfg.dim)
        self.text_head = nn.Linear(cfg.dim, cfg.text_vocab, bias=False)
        self.speech_head = nn.Linear(cfg.dim, cfg.speech_vocab, bias=False)
        self.register_buffer("inv_freq", llama3_inv_freq(cfg), persistent=False)

    # --- conditioning ---------------------------------------------------------------------------
    def frame_text(self, ids: list[int]) -> list[int]:
        """Text ids framed by the start/stop text tokens, as T3 was trained."""
        return [self.cfg.start_text, *ids, self.cfg.stop_text]

    def prompt_positions(self, n_text_ids: int) -> int:
        """KV positions a request's prompt takes: speaker, perceiver queries, emotion, framed text, the start
        token twice."""
        return 1 + self.cfg.perceiver_queries + 1 + len(self.frame_text([0] * n_text_ids)) + 2

    def voice_embeds(self, speaker_emb: torch.Tensor, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """The exaggeration-independent conditioning of one voice: speaker token + perceiver output.
        speaker_emb (B, 256), prompt_tokens (B, P) -> (B, 1 + Q, C). Computed once per voice."""
        spk = self.cond_enc.spkr_enc(speaker_emb.view(-1, self.cfg.speaker_dim))[:, None]
        pos = torch.arange(prompt_tokens.shape[1], device=prompt_tokens.device)
        prompt = self.speech_emb(prompt_tokens) + self.speech_pos_emb(pos)
        return torch.cat((spk, self.cond_enc.perceiver(prompt)), dim=1)

    def emotion_embed(self, exaggeration: torch.Tensor) -> torch.Tensor:
        """exaggeration (B,) -> (B, 1, C)."""
        return self.cond_enc.emotion_adv_fc(exaggeration.view(-1, 1, 1).to(self.dtype))

    def prefill_embeds(self, voice: torch.Tensor, exaggeration: torch.Tensor, text_tokens: torch.Tensor,
                       cfg_pair: bool) -> torch.Tensor:
        """The prompt for one request: [voice | emotion | text | start-speech ×2]; (R, L, C) with R=2 for
        the CFG pair (row 1 has its text token embeddings zeroed, positions kept), else 1.
        text_tokens (T,) already framed by start/stop text tokens."""
        dev = text_tokens.device
        text = self.text_emb(text_tokens)[None]
        if cfg_pair:
            text = torch.cat((text, torch.zeros_like(text)))
        text = text + self.text_pos_emb(torch.arange(text_tokens.shape[0], device=dev))
        rows = text.shape[0]
        cond = torch.cat((voice, self.emotion_embed(exaggeration)), dim=1).expand(rows, -1, -1)
        start = self.speech_step_embed(torch.tensor([self.cfg.start_speech], device=dev),
                                       torch.tensor([0], device=dev))
        # The reference feeds the start-speech token twice, both at speech position 0 (ref. quirk).
        start = start[:, None].expand(rows, 2, -1)
        return torch.cat((cond.to(text.dtype), text, start), dim=1)

    @property
    def max_voice_positions(self) -> int:
        """KV positions of `voice_embeds`' output: the speaker token and the perceiver's queries."""
        return 1 + self.cfg.perceiver_queries

    @property
    def text_start(self) -> int:
        """KV position of a prompt's first text token (after the speaker token, the perceiver queries and the
        emotion token)."""
        return 1 + self.cfg.perceiver_queries + 1

    def speech_step_embed(self, tokens: torch.Tensor, speech_pos: torch.Tensor) -> torch.Tensor:
        """tokens (B,), speech positions (B,) -> (B, C)."""
        return self.speech_emb(tokens) + self.speech_pos_emb(speech_pos)

    # --- backbone -----------------------------------------------------------------------------
    def forward_backbone(self, x, k_cache, v_cache, positions, attn_mask, last: torch.Tensor | None = None):
        """x (B, T, C); k_cache/v_cache (layers, B, H, S, D); positions (T,) absolute, or (B, 1) per row;
        attn_mask bool over the first A cache positions, (T, A) or per row (B, 1, 1, A), or a `PrefixMask` (one
        query per row, each row its own number of positions), or None (causal prefill from 0). Returns the
        final-norm hidden state of the last position, (B, C), or of position last[b] in row b (right-padded
        prompts of different lengths)."""
        freqs = rotary_freqs(self.inv_freq, positions)
        q_shape = (x.shape[0], self.cfg.n_heads, x.shape[1], self.cfg.head_dim)
        attn_mask = layer_mask(attn_mask, q_shape, x)  # built once, shared by all layers
        for i, layer in enumerate(self.tfmr.layers):
            x = layer(x, freqs, k_cache[i], v_cache[i], positions, for_layer(attn_mask, i))
        return self.tfmr.norm(x[:, -1] if last is None else x[torch.arange(x.shape[0], device=x.device), last])

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.speech_head(hidden)
