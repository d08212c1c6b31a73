"""GPU checks (skipped without CUDA). The full fp32 parity suite runs on CUDA with
`CADENCE_PARITY_DEVICE=cuda pytest tests/parity`."""

import pytest
import torch

from tests.conftest import rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_matches_cpu_teacher_forced(tiny_ckpt):
    from cadence.sampling_params import SamplingParams
    from cadence.tts import TTS
    cpu = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, memory_plan="fp32")  # the exact CPU path
    gpu = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, dtype="float32")
    p = SamplingParams(max_new_tokens=16, seed=1)
    voice = cpu.default_voice
    run = cpu.t3_runner.generate(cpu.prefill("Hello there.", voice, p), p, 1, keep_logits=True)
    out = gpu.t3_runner.generate(gpu.prefill("Hello there.", voice, p), p, 1,
                                 forced_tokens=run.tokens,
                                 keep_logits=True)
    assert max(rel_err(a, b) for a, b in zip(out.logits, run.logits)) < 1e-3


def test_cuda_generate_is_reproducible(tiny_ckpt):
    from cadence.tts import TTS
    gpu = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False)
    a = gpu.generate("Hello there.", seed=4, max_new_tokens=20)
    b = gpu.generate("Hello there.", seed=4, max_new_tokens=20)
    assert a.tokens == b.tokens and a.samples.size > 0


def test_graph_decode_matches_eager_bf16(tiny_ckpt):
    from cadence.tts import TTS
    graph = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False)
    eager = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, enforce_eager=True)
    a = graph.generate("Hello there.", seed=3, max_new_tokens=48, speech_tokens_only=True)
    b = eager.generate("Hello there.", seed=3, max_new_tokens=48, speech_tokens_only=True)
    agree = sum(x == y for x, y in zip(a.tokens, b.tokens)) / len(b.tokens)
    assert len(a.tokens) == len(b.tokens) == 48 and agree >= 0.9, agree


def test_cfm_graph_matches_eager_solve(tiny_ckpt):
    from cadence.engine.rng import RequestRNG
    from cadence.tts import TTS
    graph = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, dtype="float32")
    eager = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, dtype="float32", enforce_eager=True)
    voice = graph.default_voice
    tokens = torch.randint(0, 6561, (37,), generator=torch.Generator().manual_seed(0))
    m1 = graph.audio_runner.mel(tokens, voice, RequestRNG(5, "cuda"))
    m2 = eager.audio_runner.mel(tokens, voice, RequestRNG(5, "cuda"))
    assert rel_err(m1.cpu(), m2.cpu()) < 1e-4


def test_batched_cfm_graphs_match_eager_padded_windows(tiny_ckpt):
    """Several streams' windows (different lengths, a padded batch) through the captured CFM graphs equal the
    eager math row by row."""
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, dtype="float32")
    flow, graphs = tts.s3gen.flow, tts.audio_runner.cfm_graphs
    g = torch.Generator().manual_seed(0)
    for B, T in ((3, 40), (5, 70)):
        tokens = torch.randint(0, 6561, (B, T), generator=g).cuda()
        lengths = torch.tensor([T, T - 7, T - 20][:B] + [T - 3] * (B - 3)).cuda()
        frames = 2 * lengths - 6
        noise, cond = (torch.randn(B, 80, 2 * T, generator=g).cuda() for _ in range(2))
        xvector = torch.randn(B, 192, generator=g).cuda()
        with torch.inference_mode():
            a = flow.solve_padded(tokens, lengths, frames, noise, cond, xvector, 10, solver=graphs.solve)
            b = flow.solve_padded(tokens, lengths, frames, noise, cond, xvector, 10)
        for i in range(B):
            n = int(frames[i])
            assert rel_err(a[i, :, :n].cpu(), b[i, :, :n].cpu()) < 1e-3  # padded shapes: other conv algorithms
    assert sorted(graphs.captured) == [(4, 128, 10), (8, 192, 10)]


def test_on_demand_preparation_equals_resident(tiny_ckpt, ref_wav_path):
    from cadence.tts import TTS
    lent = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False)
    resident = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, prepare_device="cuda")
    assert lent.s3gen.tokenizer.window.device.type == "cpu"
    before = torch.cuda.memory_allocated()
    a = lent.prepare_voice(str(ref_wav_path))
    b = resident.prepare_voice(str(ref_wav_path))
    assert torch.equal(a.prompt_tokens, b.prompt_tokens) and torch.equal(a.t3_prompt_tokens, b.t3_prompt_tokens)
    assert rel_err(a.xvector, b.xvector) < 1e-5
    assert resident._speaker_encoder is not None and lent._speaker_encoder is None  # CAMPPlus graphed when resident
    again = resident.prepare_voice(str(ref_wav_path))  # a replay of the captured graph
    assert torch.equal(again.xvector, b.xvector)
    assert lent.s3gen.tokenizer.window.device.type == "cpu"
    # the encoders (~530 MB at full size, ~30 MB tiny) left the GPU; a few MB of cached FFT plans may stay
    assert torch.cuda.memory_allocated() <= before + 16 * 2**20


@pytest.mark.parametrize("plan", ["bf16-lowmem", "int8", "offload"])
def test_memory_plans_generate(tiny_ckpt, plan):
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, memory_plan=plan)
    a = tts.generate("Hello there.", seed=2, max_new_tokens=16, speech_tokens_only=True)
    b = tts.generate("Hello there.", seed=2, max_new_tokens=16, speech_tokens_only=True)
    assert len(a.tokens) == 16 and a.tokens == b.tokens
    if plan == "offload":  # between requests nothing of T3 or S3Gen stays on the GPU
        assert tts.t3.speech_head.weight.device.type == "cpu"
        assert tts.s3gen.flow.encoder_proj.weight.device.type == "cpu"


def test_pipelined_lease_matches_host_math():
    from torch import nn

    from cadence.memory.lease import OnDemand
    torch.manual_seed(0)
    layers = [nn.Linear(512, 512) for _ in range(8)]
    model = nn.Sequential(*layers)
    x = torch.randn(4, 512)
    want = model(x)
    lease = OnDemand([model], torch.device("cuda"), pipeline=layers[2:])
    for _ in range(3):  # each lease its own transfers; later layers still in flight when the first ones run
        with lease:
            got = model(x.cuda()).cpu()
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
        assert model[7].weight.device.type == "cpu"


def test_offload_frees_everything_between_requests(tiny_ckpt):
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, memory_plan="offload")
    assert tts.t3_runner.use_graphs and tts.audio_runner.cfm_graphs is None  # T3 graphs per lease, S3Gen eager
    first = tts.generate("Hello there.", seed=3, max_new_tokens=40, speech_tokens_only=True)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    for _ in range(3):
        again = tts.generate("Hello there.", seed=3, max_new_tokens=40, speech_tokens_only=True)
        torch.cuda.synchronize()
        assert again.tokens == first.tokens
        assert torch.cuda.memory_allocated() <= base  # decode graphs, KV cache and weights all left
    assert tts.t3_runner.decoders == []


def test_repeated_captures_do_not_grow_memory():
    # Each capture used to warm up on a fresh stream, and cuBLAS keeps a 32 MiB workspace per stream it has seen.
    from cadence.engine.cuda_graphs import capture
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    graph, _ = capture(lambda: a @ a)
    del graph
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    for _ in range(6):
        graph, out = capture(lambda: a @ a)
        graph.replay()
        del graph, out
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - base < 4 * 2**20


def test_prefix_attention_kernel_on_cuda_in_a_graph():
    """Triton's per-row prefix attention (bf16, enough rows for the kernel) equals masked attention in fp32,
    also replayed from a CUDA graph after the lengths changed."""
    import torch.nn.functional as F

    from cadence.engine.cuda_graphs import capture
    from cadence.layers.decode_attention import kernel_applies, prefix_attention, prefix_bias
    g = torch.Generator(device="cuda").manual_seed(0)
    B, H, S, D, A = 64, 16, 1536, 64, 1024
    k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    q = torch.randn(B, H, 1, D, device="cuda", dtype=torch.bfloat16, generator=g)
    assert kernel_applies(q.shape, q.device, q.dtype)
    lengths = torch.randint(1, A + 1, (B,), device="cuda", generator=g).to(torch.int32)
    graph, out = capture(lambda: prefix_attention(q, k[:, :, :A], v[:, :, :A], lengths))
    for _ in range(2):
        graph.replay()
        ref = F.scaled_dot_product_attention(q.float(), k[:, :, :A].float(), v[:, :, :A].float(),
                                             attn_mask=prefix_bias(lengths, A, torch.float32))
        assert rel_err(out.float().cpu(), ref.cpu()) < 1e-2
        lengths.copy_(torch.randint(1, A + 1, (B,), device="cuda", generator=g))


def test_snake_kernel_on_cuda_matches_eager():
    from cadence.layers.snake import snake
    g = torch.Generator().manual_seed(0)
    x, alpha = torch.randn(3, 64, 48000, generator=g) * 2, torch.rand(64, generator=g) + 0.1
    mask = (torch.arange(48000)[None] < torch.tensor([[48000], [30000], [7]])).float()[:, None]
    for m in (None, mask):
        out = snake(x.cuda(), alpha.cuda(), None if m is None else m.cuda())
        assert rel_err(out.cpu(), snake(x, alpha, m)) < 1e-6


@pytest.mark.parametrize("rows, per_row", [(2, False), (8, True)])
def test_rotary_kv_kernel_in_a_graph_matches_the_eager_rotation(rows, per_row):
    """The decode step's fused rotary + KV write (bf16) equals `apply_rotary` and the KV write it replaces, for a
    CFG pair at one position and a batch at one position per row, replayed from a CUDA graph."""
    from cadence.engine.cuda_graphs import capture
    from cadence.layers.kv_write import write_kv
    from cadence.layers.rotary_kv import applies, rotate_and_write
    from cadence.models.t3 import T3Config, apply_rotary, llama3_inv_freq, rotary_freqs
    g = torch.Generator(device="cuda").manual_seed(0)
    H, S, D = 16, 300, 64
    inv = llama3_inv_freq(T3Config()).cuda()
    qkv = torch.randn(rows, 1, 3 * H * D, device="cuda", dtype=torch.bfloat16, generator=g)
    pos = (torch.randint(0, S, (rows, 1), device="cuda", generator=g) if per_row
           else torch.tensor([123], device="cuda"))
    kc, vc = (torch.zeros(rows, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    assert applies(qkv, kc, pos)
    graph, q = capture(lambda: rotate_and_write(qkv, rotary_freqs(inv, pos), kc, vc, pos))
    kc.zero_(), vc.zero_()
    graph.replay()
    heads = qkv.view(rows, 1, 3 * H, D).transpose(1, 2)
    qk = apply_rotary(heads[:, : 2 * H], rotary_freqs(inv, pos))
    rk, rv = torch.zeros_like(kc), torch.zeros_like(vc)
    write_kv(qk[:, H:], heads[:, 2 * H:], rk, rv, pos)
    assert rel_err(q.float(), qk[:, :H].float()) < 1e-2
    assert rel_err(kc.float(), rk.float()) < 1e-2 and torch.equal(vc, rv)
