"""The batched engine on CUDA (skipped without CUDA): graph ladder, fp32 equality with the single path,
join/leave while others decode, cancellation, memory flat across batches."""

import time

import numpy as np
import pytest
import torch

from cadence.engine.request import Request, RequestCancelled
from cadence.sampling_params import SamplingParams
from tests.conftest import rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TEXTS = ["Hello there, friend.", "A somewhat longer sentence that should produce more tokens overall.", "Short one.",
         "Numbers like 42 and 7 are read aloud.", "The fifth request joins the batch."]


@pytest.fixture(scope="module")
def fp32_gpu(tiny_ckpt):
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, dtype="float32", max_batch=4)
    yield tts
    tts.close()


def test_batched_fp32_on_cuda_matches_single_requests(fp32_gpu):
    knobs = dict(seed=[1, 2, 3, 4, 5], max_new_tokens=[30, 64, 45, 20, 50], top_k=[0, 40, 0, 0, 10])
    many = fp32_gpu.generate_many(TEXTS, speech_tokens_only=True, **knobs)  # 5 requests, 4 slots: one waits
    alone = [fp32_gpu.generate(t, speech_tokens_only=True, **{k: v[i] for k, v in knobs.items()})
             for i, t in enumerate(TEXTS)]
    assert fp32_gpu.engine.decoder.use_graphs and fp32_gpu.engine.decoder.graphs
    same = sum(a.tokens == b.tokens for a, b in zip(alone, many))
    assert same >= 4, f"only {same}/5 requests gave identical tokens batched and alone"
    for a, b in zip(alone, many):  # padded batched S3Gen vs the single-request CFM graph: other kernels
        if a.tokens == b.tokens:
            assert rel_err(b.samples, a.samples) < 2e-2


def test_cancel_and_join_while_decoding_on_cuda(fp32_gpu):
    eng = fp32_gpu.engine
    long = eng.submit(Request(TEXTS[1], fp32_gpu.default_voice, SamplingParams(seed=1, max_new_tokens=500),
                              ignore_eos=True))
    time.sleep(0.05)
    late = eng.submit(Request(TEXTS[0], fp32_gpu.default_voice, SamplingParams(seed=2, max_new_tokens=30),
                              ignore_eos=True))
    long.cancel()
    assert len(late.result(60).tokens) == 30
    with pytest.raises(RequestCancelled):
        long.result(60)
    assert eng.load["running"] == 0


def test_engine_memory_is_flat_across_batches(fp32_gpu):
    fp32_gpu.generate_many(TEXTS, seed=list(range(5)), max_new_tokens=40)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for i in range(5):
        fp32_gpu.generate_many(TEXTS, seed=[i * 10 + j for j in range(5)], max_new_tokens=40)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - before < 4 << 20


def test_background_warmup_serves_at_once_and_captures_while_serving(tiny_ckpt):
    """Requests submitted while the graphs are still being captured run (their steps eagerly until their graph is
    there), give the tokens a fully warmed engine gives, and the warm-up finishes."""
    from cadence.tts import TTS
    knobs = dict(seed=[1, 2, 3], max_new_tokens=[30, 64, 45])
    warm = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, dtype="float32", max_batch=4)
    warm.engine.warmup()
    want = warm.generate_many(TEXTS[:3], speech_tokens_only=True, **knobs)
    warm.close()
    tts = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, dtype="float32", max_batch=4)
    tts.engine.warmup(background=True)
    assert tts.engine.load["warming"] > 0
    got = tts.generate_many(TEXTS[:3], speech_tokens_only=True, **knobs)
    assert [a.tokens for a in got] == [b.tokens for b in want]
    deadline = time.time() + 120
    while tts.engine.load["warming"] and time.time() < deadline:
        time.sleep(0.1)
    assert tts.engine.load["warming"] == 0 and tts.engine.decoder.graphs
    tts.close()
