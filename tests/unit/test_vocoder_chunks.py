"""HiFT a run of frames at a time (`cadence.engine.vocoder_chunks`) gives the one-piece waveform: the source's
phase stays global, each run of the upsampler is computed with frames either side that it then drops."""

import pytest
import torch

from cadence.engine.vocoder_chunks import vocode_in_runs
from cadence.models.s3gen.hift import HiFTConfig, HiFTGenerator


@pytest.fixture(scope="module")
def vocoder_case():
    torch.manual_seed(0)
    hift = HiFTGenerator(HiFTConfig(base_channels=128, f0_channels=64)).eval()
    for p in hift.parameters():  # weights large enough that a run's edges would show without its halo
        p.data.normal_(0, 0.15)
    T = 230
    mel = torch.randn(1, 80, T) * 0.5 - 3
    phase = torch.rand(1, 9, 1) * 6.28 - 3.14
    noise = torch.randn(1, 9, T * 480)
    with torch.inference_mode():
        return hift, mel, phase, noise, hift(mel, phase, noise)


@pytest.mark.parametrize("run_frames", [64, 100, 229, 230, 500])
def test_runs_give_the_one_piece_waveform(vocoder_case, run_frames):
    hift, mel, phase, noise, whole = vocoder_case
    with torch.inference_mode():
        runs = vocode_in_runs(hift, mel, phase, noise, run_frames)
    assert runs.shape == whole.shape
    assert float((runs - whole).abs().max()) < 1e-6


def test_without_the_halo_the_runs_differ(vocoder_case):
    hift, mel, phase, noise, whole = vocoder_case
    with torch.inference_mode():
        runs = vocode_in_runs(hift, mel, phase, noise, 64, halo=0)
    assert float((runs - whole).abs().max()) > 1e-4  # the test can see a run's edge


def test_one_row_only(vocoder_case):
    hift, mel, phase, noise, _ = vocoder_case
    with pytest.raises(ValueError, match="one row"):
        vocode_in_runs(hift, mel.repeat(2, 1, 1), phase.repeat(2, 1, 1), noise.repeat(2, 1, 1))
