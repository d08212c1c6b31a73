"""Where a warm voice preparation's time goes (stages timed with device syncs; medians of 8)."""
import statistics
import sys
import time

import torch

from cadence.audio.dsp import kaldi_fbank, resample_sinc, s3gen_mel
from cadence.audio.io import resample
from cadence.models.voice_encoder import speaker_embedding, voice_mel
from cadence.random_checkpoint import synthetic_voice
from cadence.tts import TTS

tts = TTS.from_dir(sys.argv[1], device="cuda", watermark=False)
wav = synthetic_voice(seconds=9.98)
s3 = tts.s3gen


def t(fn, n=8):
    out = []
    for _ in range(n + 2):
        torch.cuda.synchronize(); a = time.perf_counter(); fn(); torch.cuda.synchronize()
        out.append(time.perf_counter() - a)
    return statistics.median(out[2:]) * 1e3


print(f"prepare_voice (auto, lent): {t(lambda: tts.prepare_voice(wav, sample_rate=24000)):.1f} ms")
print(f"lend + return encoders: {t(lambda: tts._prep_lease.__enter__() and tts._prep_lease.__exit__(None, None, None)):.1f} ms")
with tts._prep_lease:
    w16 = resample(wav, 24000, 16000)
    ref24 = torch.from_numpy(wav).cuda()[None]
    ref16 = resample_sinc(ref24, 24000, 16000)
    feats = kaldi_fbank(ref16[0])
    print(f"soxr 24->16: {t(lambda: resample(wav, 24000, 16000)):.1f} ms")
    print(f"s3gen mel: {t(lambda: s3gen_mel(ref24)):.1f} ms")
    print(f"sinc resample + fbank: {t(lambda: kaldi_fbank(resample_sinc(ref24, 24000, 16000)[0])):.1f} ms")
    with torch.inference_mode():
        print(f"CAMPPlus: {t(lambda: s3.speaker_encoder(feats[None])):.1f} ms")
    t3r = torch.from_numpy(w16[:96000]).cuda()[None]
    print(f"tokenizer (batched): {t(lambda: s3.tokenizer.tokenize([ref16, t3r], [None, 150])):.1f} ms")
    print(f"VE mel (numpy): {t(lambda: voice_mel(w16)):.1f} ms")
    print(f"VE total (mel + LSTM): {t(lambda: speaker_embedding(tts.ve, w16)):.1f} ms")
