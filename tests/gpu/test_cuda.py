"""GPU checks (skipped without CUDA). The full fp32 parity suite runs on CUDA with
`CADENCE_PARITY_DEVICE=cuda pytest tests/parity`."""

import pytest
import torch

from tests.conftest import rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_matches_cpu_teacher_forced(tiny_ckpt):
    from cadence.sampling_params import SamplingParams
    from cadence.tts import TTS
    cpu = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False)
    gpu = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, dtype="float32")
    p = SamplingParams(max_new_tokens=16, seed=1)
    voice = cpu.default_voice
    run = cpu.t3_runner.generate(cpu.prefill("Hello there.", voice, p), p, torch.Generator().manual_seed(1),
                                 keep_logits=True)
    out = gpu.t3_runner.generate(gpu.prefill("Hello there.", voice, p), p,
                                 torch.Generator(device="cuda").manual_seed(1), forced_tokens=run.tokens,
                                 keep_logits=True)
    assert max(rel_err(a, b) for a, b in zip(out.logits, run.logits)) < 1e-3


def test_cuda_generate_is_reproducible(tiny_ckpt):
    from cadence.tts import TTS
    gpu = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False)
    a = gpu.generate("Hello there.", seed=4, max_new_tokens=20)
    b = gpu.generate("Hello there.", seed=4, max_new_tokens=20)
    assert a.tokens == b.tokens and a.samples.size > 0
