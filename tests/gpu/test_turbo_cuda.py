"""Turbo on CUDA (skipped without CUDA): the fused decode kernels against the eager math, graph decode against
eager, the batched engine against single requests, streaming, and the memory plans."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TEXTS = ["Well [laugh] hello there, friend.", "A somewhat longer sentence [sigh] that makes more tokens overall.",
         "Short one.", "Numbers like 42 and 7 are read aloud."]


@pytest.fixture(scope="module")
def turbo_ckpt(tmp_path_factory):
    from cadence.random_checkpoint import make_random_turbo_checkpoint
    return make_random_turbo_checkpoint(tmp_path_factory.mktemp("turbo_gpu"), seed=3, tiny=True)


@pytest.mark.parametrize("k, n", [(1024, 3072), (4096, 1024), (1024, 6563)])
def test_decode_linear_kernels_match_eager_bf16(k, n):
    from cadence.layers.decode_linear import applies, launch
    g = torch.Generator(device="cuda").manual_seed(0)
    bf = dict(device="cuda", dtype=torch.bfloat16)
    rows = 1
    x = torch.randn(rows, k, generator=g, **bf)
    w, b = torch.randn(n, k, generator=g, **bf) / k ** 0.5, torch.randn(n, generator=g, **bf)
    lw, lb, r = torch.randn(k, generator=g, **bf), torch.randn(k, generator=g, **bf), torch.randn(rows, n, generator=g, **bf)
    want = F.gelu(F.linear(F.layer_norm(x, (k,), lw, lb, 1e-5), w, b), approximate="tanh")
    assert rel_err(launch(x, w, b, (lw, lb, 1e-5), True), want) < 1e-2
    assert rel_err(launch(x, w, b, residual=r), r + F.linear(x, w, b)) < 1e-2
    lin = torch.nn.Linear(k, n, **bf)
    assert applies(x, lin) and not applies(torch.cat((x, x)), lin)  # batches take cuBLAS


def test_kv_write_kernel_in_a_graph_matches_index_copy():
    from cadence.layers.kv_write import write_kv
    B, H, S, D = 3, 16, 64, 64
    qkv = torch.randn(B, 3 * H, 1, D, device="cuda")
    k, v = qkv[:, H:2 * H], qkv[:, 2 * H:]
    pos = torch.tensor([[2], [9], [63]], device="cuda")
    kc, vc = torch.zeros(B, H, S, D, device="cuda"), torch.zeros(B, H, S, D, device="cuda")
    graph = torch.cuda.CUDAGraph()
    write_kv(k, v, kc, vc, pos)  # warm-up (Triton compiles outside the capture)
    with torch.cuda.graph(graph):
        write_kv(k, v, kc, vc, pos)
    kc.zero_(), vc.zero_()
    graph.replay()
    rows = torch.arange(B, device="cuda")
    assert torch.equal(kc[rows, :, pos[:, 0]], k[:, :, 0]) and torch.equal(vc[rows, :, pos[:, 0]], v[:, :, 0])
    assert kc.abs().sum(dim=(1, 3)).count_nonzero() == B  # nothing written elsewhere


def test_turbo_graph_decode_matches_eager_bf16(turbo_ckpt):
    from cadence.tts import TTS
    graph = TTS.from_dir(turbo_ckpt, device="cuda", watermark=False)
    eager = TTS.from_dir(turbo_ckpt, device="cuda", watermark=False, enforce_eager=True)
    a = graph.generate(TEXTS[0], seed=3, max_new_tokens=48, speech_tokens_only=True)
    b = eager.generate(TEXTS[0], seed=3, max_new_tokens=48, speech_tokens_only=True)
    agree = sum(x == y for x, y in zip(a.tokens, b.tokens)) / len(b.tokens)
    assert len(a.tokens) == len(b.tokens) == 48 and agree >= 0.9, agree


def test_turbo_batched_on_cuda_matches_single_requests(turbo_ckpt):
    from cadence.tts import TTS
    tts = TTS.from_dir(turbo_ckpt, device="cuda", watermark=False, dtype="float32", max_batch=4)
    knobs = dict(seed=[1, 2, 3, 4], max_new_tokens=[30, 64, 45, 20], top_k=[1000, 40, 0, 1000], top_p=[0.95, 1.0, 0.9, 0.95])
    many = tts.generate_many(TEXTS, speech_tokens_only=True, **knobs)
    alone = [tts.generate(t, speech_tokens_only=True, **{k: v[i] for k, v in knobs.items()}) for i, t in enumerate(TEXTS)]
    assert tts.engine.rows_per_slot == 1 and tts.engine.decoder.graphs
    same = sum(a.tokens == b.tokens for a, b in zip(alone, many))
    assert same >= 3, f"only {same}/4 requests gave identical tokens batched and alone"
    from cadence.engine.request import Request
    from cadence.sampling_params import SamplingParams
    params = SamplingParams.for_family(tts.family, seed=9, max_new_tokens=96)
    chunks = list(tts.submit(Request(TEXTS[1], tts.default_voice, params, speech_tokens_only=True, stream=True)))
    whole = tts.generate_many([TEXTS[1]], seed=9, max_new_tokens=96, speech_tokens_only=True)[0]
    assert len(chunks) >= 3 and chunks[-1].tokens == whole.tokens
    assert sum(c.samples.size for c in chunks) == whole.samples.size
    tts.close()


@pytest.mark.parametrize("plan", ["bf16-lowmem", "int8", "offload"])
def test_turbo_memory_plans_generate(turbo_ckpt, plan):
    from cadence.tts import TTS
    tts = TTS.from_dir(turbo_ckpt, device="cuda", watermark=False, memory_plan=plan)
    a = tts.generate(TEXTS[0], seed=2, max_new_tokens=16, speech_tokens_only=True)
    b = tts.generate(TEXTS[0], seed=2, max_new_tokens=16, speech_tokens_only=True)
    assert len(a.tokens) == 16 and a.tokens == b.tokens and np.isfinite(a.samples).all()
    if plan == "offload":  # between requests nothing of T3 or S3Gen stays on the GPU
        assert tts.t3.speech_head.weight.device.type == "cpu"
        assert tts.s3gen.flow.encoder_proj.weight.device.type == "cpu"
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        tts.generate(TEXTS[0], seed=2, max_new_tokens=16, speech_tokens_only=True)
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() <= base
