"""S3Gen: speech tokens + voice prompt -> 24 kHz waveform (flow matching to mel, HiFT vocoder), plus the
two preparation encoders stored in the same checkpoint (S3 tokenizer, CAMPPlus)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..campplus import CAMPPlus
from ..s3_tokenizer import S3Tokenizer, S3TokenizerConfig
from .encoder import FlowEncoderConfig
from .estimator import EstimatorConfig
from .flow import CausalFlow, FlowConfig
from .hift import HiFTConfig, HiFTGenerator

S3GEN_SR = 24000
S3_SR = 16000
SPEECH_VOCAB = 6561
SILENCE_TOKEN = 4299  # S3Gen's silence token (the reference's S3GEN_SIL)


@dataclass(frozen=True)
class S3GenConfig:
    flow: FlowConfig = field(default_factory=FlowConfig)
    hift: HiFTConfig = field(default_factory=HiFTConfig)
    tokenizer: S3TokenizerConfig = field(default_factory=S3TokenizerConfig)

    @classmethod
    def english(cls) -> "S3GenConfig":
        return cls()

    @classmethod
    def tiny(cls, meanflow: bool = False) -> "S3GenConfig":
        flow = FlowConfig(encoder=FlowEncoderConfig(dim=512, heads=8, ffn_dim=128, n_blocks=1, n_up_blocks=1),
                          estimator=EstimatorConfig(channels=64, n_blocks=1, n_mid=1, heads=2, head_dim=16,
                                                    meanflow=meanflow),
                          n_timesteps=2 if meanflow else 10)
        hift = HiFTConfig(base_channels=32, f0_channels=32)
        tok = S3TokenizerConfig(dim=64, heads=2, n_layers=1)
        return cls(flow=flow, hift=hift, tokenizer=tok)

    @classmethod
    def meanflow(cls) -> "S3GenConfig":
        """Turbo's `s3gen_meanflow`: the same networks, a meanflow estimator solved in 2 steps."""
        return cls(flow=FlowConfig(estimator=EstimatorConfig(meanflow=True), n_timesteps=2))


def trim_fade(n_samples: int = S3GEN_SR // 50) -> torch.Tensor:
    """Silence the first 20 ms and fade in over the next 20 ms: hides spill-over from the voice prompt."""
    fade = torch.zeros(2 * n_samples)
    fade[n_samples:] = (torch.cos(torch.linspace(torch.pi, 0, n_samples)) + 1) / 2
    return fade


class S3Gen(nn.Module):
    def __init__(self, cfg: S3GenConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = S3Tokenizer(cfg.tokenizer)
        self.speaker_encoder = CAMPPlus()
        self.flow = CausalFlow(cfg.flow)
        self.mel2wav = HiFTGenerator(cfg.hift)
        self.register_buffer("trim_fade", trim_fade(), persistent=False)
