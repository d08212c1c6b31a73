"""Perth's watermark on the GPU (`watermark_device="cuda"`): the same network on the same audio as on the CPU."""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
perth = pytest.importorskip("perth")


def test_watermark_on_cuda_matches_cpu_and_is_detected():
    from cadence import watermark as wm
    rng = np.random.default_rng(0)
    t = np.arange(24000 * 4) / 24000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    on_cpu, marked_cpu = wm.apply(wav, 24000, "cpu")
    on_gpu, marked_gpu = wm.apply(wav, 24000, "cuda")
    assert marked_cpu and marked_gpu and on_gpu.shape == on_cpu.shape
    # cuFFT and the GPU convolutions (TF32 allowed) against the CPU's: the same watermark, to noise far below
    # the mark itself
    mark = np.linalg.norm(on_cpu - wav)
    assert mark > 0 and np.linalg.norm(on_gpu - on_cpu) < 0.1 * mark
