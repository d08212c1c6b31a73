"""A prepared voice: everything generation needs from a reference recording, a few hundred KB of tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Voice:
    speaker_emb: torch.Tensor
    """(1, 256) VoiceEncoder embedding, T3's speaker token."""
    t3_prompt_tokens: torch.Tensor
    """(1, <=150) S3 tokens of the reference's first 6 s: T3's prompt, resampled by the perceiver."""
    prompt_tokens: torch.Tensor
    """(1, Tp) S3 tokens of the reference (up to 10 s): S3Gen's token prompt."""
    prompt_feat: torch.Tensor
    """(1, 2*Tp, 80) 24 kHz log-mel of the reference: S3Gen's mel prompt."""
    xvector: torch.Tensor
    """(1, 192) CAMPPlus speaker x-vector for S3Gen."""
    exaggeration: float = 0.5
    """Default emotion intensity when a request does not set one."""
    meta: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"speaker_emb": self.speaker_emb, "t3_prompt_tokens": self.t3_prompt_tokens,
                "prompt_tokens": self.prompt_tokens, "prompt_feat": self.prompt_feat, "xvector": self.xvector}

    def to(self, device) -> "Voice":
        return Voice(**{k: v.to(device) for k, v in self.tensors().items()},
                     exaggeration=self.exaggeration, meta=dict(self.meta))

    @property
    def language(self) -> str | None:
        """The language this voice was stored with (a multilingual model's request without one speaks it)."""
        return self.meta.get("language")

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def save_conds_pt(self, path: str | Path) -> None:
        """Write the reference package's `conds.pt` format (loadable with weights_only=True)."""
        t3 = {"speaker_emb": self.speaker_emb, "clap_emb": None, "cond_prompt_speech_tokens": self.t3_prompt_tokens,
              "cond_prompt_speech_emb": None, "emotion_adv": self.exaggeration * torch.ones(1, 1, 1)}
        gen = {"prompt_token": self.prompt_tokens, "prompt_token_len": torch.tensor([self.prompt_tokens.shape[1]]),
               "prompt_feat": self.prompt_feat, "prompt_feat_len": None, "embedding": self.xvector}
        torch.save({"t3": t3, "gen": gen}, str(path))

    @classmethod
    def from_conds_pt(cls, path: str | Path) -> "Voice":
        """Read a `conds.pt` made by the reference package (no arbitrary unpickling)."""
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
            t3, gen = data["t3"], data["gen"]
            emotion = t3.get("emotion_adv")
            exaggeration = float(emotion.reshape(-1)[0]) if torch.is_tensor(emotion) else float(emotion or 0.5)
            return cls(speaker_emb=t3["speaker_emb"].float().reshape(1, -1),
                       t3_prompt_tokens=torch.atleast_2d(t3["cond_prompt_speech_tokens"]).long(),
                       prompt_tokens=torch.atleast_2d(gen["prompt_token"]).long(),
                       prompt_feat=gen["prompt_feat"].float().reshape(1, -1, gen["prompt_feat"].shape[-1]),
                       xvector=torch.atleast_2d(gen["embedding"]).float(), exaggeration=exaggeration,
                       meta={"source": str(path)})
        except (KeyError, TypeError, AttributeError, RuntimeError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable conds.pt ({type(exc).__name__}: {exc})") from exc
