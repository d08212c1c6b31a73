"""Voice encoder: a 3-layer LSTM over 40-bin mel partials, giving the 256-dim speaker embedding T3 is
conditioned on."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audio.dsp import slaney_mel_filters, stft_power_centered, trim_silence

VE_SAMPLE_RATE = 16000
N_MELS = 40
PARTIAL_FRAMES = 160


class VoiceEncoder(nn.Module):
    def __init__(self, n_mels: int = N_MELS, hidden: int = 256, embed: int = 256):
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden, num_layers=3, batch_first=True)
        self.proj = nn.Linear(hidden, embed)
        # Trained for a similarity loss; present in the checkpoint, not used at inference.
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """mels (B, 160, 40) partials -> L2-normalised embeddings (B, 256)."""
        _, (hidden, _) = self.lstm(mels)
        raw = F.relu(self.proj(hidden[-1]))
        return raw / torch.linalg.norm(raw, dim=1, keepdim=True)


def voice_mel(wav16k: np.ndarray) -> np.ndarray:
    """Silence-trimmed 40-bin power mel, (frames, 40) float32."""
    wav = trim_silence(wav16k.astype(np.float32), top_db=20)
    power = stft_power_centered(wav, n_fft=400, hop=160)
    return np.dot(slaney_mel_filters(VE_SAMPLE_RATE, 400, N_MELS, 0.0, 8000.0), power).T.astype(np.float32)


def partial_windows(n_frames: int, rate: float = 1.3, min_coverage: float = 0.8) -> tuple[int, int, int]:
    """How the utterance is cut into 160-frame partials: (count, step, padded length)."""
    step = int(np.round((VE_SAMPLE_RATE / rate) / PARTIAL_FRAMES))
    n, rem = divmod(max(n_frames - PARTIAL_FRAMES + step, 0), step)
    if n == 0 or (rem + (PARTIAL_FRAMES - step)) / PARTIAL_FRAMES >= min_coverage:
        n += 1
    return n, step, PARTIAL_FRAMES + step * (n - 1)


@torch.inference_mode()
def speaker_embedding(encoder: VoiceEncoder, wav16k: np.ndarray) -> torch.Tensor:
    """One utterance -> (1, 256): mean of the partials' embeddings, re-normalised."""
    mel = voice_mel(wav16k)
    if len(mel) == 0:
        raise ValueError("the reference audio is silent: nothing is left after trimming silence")
    n, step, target = partial_windows(len(mel))
    device = next(encoder.parameters()).device
    mels = torch.from_numpy(mel).to(device)
    if target > len(mel):
        mels = F.pad(mels, (0, 0, 0, target - len(mel)))
    partials = torch.stack([mels[i * step: i * step + PARTIAL_FRAMES] for i in range(n)])
    emb = encoder(partials.to(next(encoder.parameters()).dtype)).float().mean(0, keepdim=True)
    return (emb / torch.linalg.norm(emb, dim=1, keepdim=True)).cpu()

