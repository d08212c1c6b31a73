"""HiFT a run of frames at a time on CUDA (skipped without it): the one-piece waveform to the convolutions'
rounding (cuDNN picks its algorithm per shape, TF32 where allowed), at a fraction of the peak memory."""

import pytest
import torch

from cadence.engine.vocoder_chunks import vocode_in_runs
from cadence.models.s3gen.hift import HiFTConfig, HiFTGenerator

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_runs_match_one_piece_with_less_memory():
    torch.manual_seed(0)
    hift = HiFTGenerator(HiFTConfig()).eval().cuda()
    for p in hift.parameters():
        p.data.normal_(0, 0.05)
    T = 1500  # 30 s
    mel = (torch.randn(1, 80, T) * 0.5 - 3).cuda()
    phase = (torch.rand(1, 9, 1) * 6.28 - 3.14).cuda()
    noise = torch.randn(1, 9, T * 480).cuda()
    peaks = []
    with torch.inference_mode():
        outs = []
        for fn in (lambda: hift(mel, phase, noise), lambda: vocode_in_runs(hift, mel, phase, noise, 256)):
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            outs.append(fn())
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated() - base)
    whole, runs = outs
    assert float((runs - whole).abs().max()) <= 1e-3 * float(whole.abs().max())
    assert peaks[1] < 0.6 * peaks[0], peaks
