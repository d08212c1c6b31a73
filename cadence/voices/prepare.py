"""Reference recording -> `Voice`: the S3Gen prompt (24 kHz mel, S3 tokens, CAMPPlus x-vector) and the T3
conditioning (VoiceEncoder speaker embedding, S3 prompt tokens)."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import torch

from ..audio.dsp import kaldi_fbank, resample_sinc, s3gen_mel
from ..audio.io import check_reference, resample, to_mono
from ..models.s3gen import S3GEN_SR, S3_SR, S3Gen
from ..models.voice_encoder import VoiceEncoder, speaker_embedding

S3GEN_PROMPT_SECONDS = 10
T3_PROMPT_SECONDS = 6


def normalize_loudness(wav: np.ndarray, sr: int, target_lufs: float) -> np.ndarray:
    """Scale `wav` to an integrated loudness of `target_lufs` (ITU-R BS.1770, through pyloudnorm). A clip the
    meter cannot measure (too short for a gating block, or silent) is left as it is, as Turbo's reference
    does."""
    import pyloudnorm
    try:
        loudness = pyloudnorm.Meter(sr).integrated_loudness(wav)
    except ValueError:
        return wav
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    # A float32 product, as the reference computes it under numpy 1.x. Under numpy 2 its float32 * float64
    # product is float64, which its S3 tokenizer then refuses (upstream #499).
    return wav * np.float32(gain) if np.isfinite(gain) and gain > 0 else wav


@torch.inference_mode()
def prepare_voice(s3gen: S3Gen, ve: VoiceEncoder, t3_prompt_len: int, wav: np.ndarray, sample_rate: int,
                  exaggeration: float = 0.5, speaker_encoder=None, t3_prompt_seconds: int = T3_PROMPT_SECONDS,
                  target_lufs: float | None = None, min_seconds: float = 1.0) -> "Voice":
    """`speaker_encoder` replaces `s3gen.speaker_encoder`'s call (the engine passes a CUDA-graphed one).
    `t3_prompt_seconds`, `target_lufs` and `min_seconds` are the model family's (Turbo: 15 s, -27 LUFS,
    longer than 5 s)."""
    from .voice import Voice
    if not 0.0 <= float(exaggeration) <= 2.0:
        raise ValueError(f"exaggeration must be in [0, 2], got {exaggeration}")
    started = time.perf_counter()
    wav = to_mono(wav)
    check_reference(wav, sample_rate, min_seconds)
    wav24 = resample(wav, sample_rate, S3GEN_SR)
    if target_lufs is not None:
        wav24 = normalize_loudness(wav24, S3GEN_SR, target_lufs)
    wav16 = resample(wav24, S3GEN_SR, S3_SR)
    device = s3gen.tokenizer.window.device
    dtype = s3gen.speaker_encoder.head.conv1.weight.dtype

    # On the model's device, as the reference computes these: same kernels, same rounding.
    ref24 = torch.from_numpy(wav24[: S3GEN_PROMPT_SECONDS * S3GEN_SR].copy())[None].to(device)
    prompt_feat = s3gen_mel(ref24).transpose(1, 2)  # (1, T, 80); stays on the device until the end
    ref16 = resample_sinc(ref24, S3GEN_SR, S3_SR)
    feats = kaldi_fbank(ref16[0])
    feats = feats - feats.mean(dim=0, keepdim=True)
    xvector = (speaker_encoder or s3gen.speaker_encoder)(feats[None].to(device, dtype)).float()
    # Both token prompts (S3Gen's from the 10 s reference, T3's from the first 6 s) in one batched pass.
    t3_ref = torch.from_numpy(wav16[: t3_prompt_seconds * S3_SR].copy())[None]
    prompt_tokens, t3_tokens = s3gen.tokenizer.tokenize([ref16, t3_ref], [None, t3_prompt_len])
    # Mel frames and tokens should line up 2:1. Like the reference, cut surplus tokens but keep every
    # mel frame (a 9.98 s prompt gives 499 frames and 249 tokens; the new audio then has 2N-1 frames).
    prompt_tokens = prompt_tokens[:, : prompt_feat.shape[1] // 2]

    speaker = speaker_embedding(ve, wav16)  # its numpy mel overlaps the device work queued above
    prompt_feat, xvector, prompt_tokens, t3_tokens = (t.cpu() for t in (prompt_feat, xvector, prompt_tokens, t3_tokens))
    meta = {"source_sha256": hashlib.sha256(np.ascontiguousarray(wav).tobytes()).hexdigest(),
            "duration_s": round(wav.size / sample_rate, 3), "sample_rate": int(sample_rate),
            "prepare_s": round(time.perf_counter() - started, 4)}
    return Voice(speaker_emb=speaker, t3_prompt_tokens=t3_tokens, prompt_tokens=prompt_tokens,
                 prompt_feat=prompt_feat.contiguous(), xvector=xvector, exaggeration=float(exaggeration), meta=meta)
