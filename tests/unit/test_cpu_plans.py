"""The CPU's own plans: chosen from the CPU's features, dynamic int8 layers close to fp32, thread counts set from
the config, and the doctor's self-test mechanism (on tiny networks: its timing is not what is tested)."""

import numpy as np
import pytest
import torch
from torch import nn

from cadence.config import EngineConfig
from cadence.memory import cpu_int8
from cadence.memory.cpu_int8 import DynamicInt8Linear, quantize_dynamic_int8_
from cadence.memory.plan import choose_cpu_plan, choose_plan
from cadence.layers.blocked_attention import blocked_attention, heads_per_block
from cadence.layers.key_padding import key_padding, padded_attention
from cadence.models.s3gen.estimator import Attention

needs_fbgemm = pytest.mark.skipif(not cpu_int8.available(), reason="this PyTorch build has no FBGEMM")


def test_auto_on_the_cpu_follows_its_features():
    assert choose_cpu_plan("auto", flags={"avx2"}, int8_kernels=True)[0].name == "cpu-int8"
    plan, why = choose_cpu_plan("auto", flags={"avx512f", "amx_bf16"}, int8_kernels=True)
    assert plan.name == "cpu-bf16" and plan.flow_dtype == torch.bfloat16 and plan.cpu_int8 and "bf16" in why
    plan, why = choose_cpu_plan("auto", flags={"avx512_bf16"}, int8_kernels=False)
    assert plan.name == "fp32" and not plan.cpu_int8 and "FBGEMM" in why
    assert choose_cpu_plan("fp32", flags=set(), int8_kernels=True)[0].name == "fp32"  # the parity path by name
    with pytest.raises(ValueError, match="FBGEMM"):
        choose_cpu_plan("cpu-int8", flags=set(), int8_kernels=False)


def test_cpu_plans_are_refused_where_they_cannot_run():
    with pytest.raises(ValueError, match="is for the CPU"):
        choose_plan("cpu-int8", None, torch.device("cuda"))
    with pytest.raises(ValueError, match="does not run on MPS"):
        choose_plan("cpu-int8", None, torch.device("mps"))
    assert choose_plan("auto", None, torch.device("mps"))[0].name == "fp32"
    with pytest.raises(ValueError, match="unknown memory plan"):
        EngineConfig(memory_plan="cpu-fast")


def test_vnni_decides_the_activation_range():
    assert cpu_int8.has_vnni({"avx512_vnni"}) and cpu_int8.has_vnni({"avx_vnni"})
    assert not cpu_int8.has_vnni({"avx2", "fma"})


@needs_fbgemm
def test_dynamic_int8_linear_is_close_to_fp32_with_and_without_bias():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32, bias=False))
    x = torch.randn(2, 7, 64)  # any leading dimensions
    ref = m(x)
    assert quantize_dynamic_int8_(m) == 2
    assert isinstance(m[0], DynamicInt8Linear) and isinstance(m[2], DynamicInt8Linear)
    out = m(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).norm() / ref.norm() < 0.05
    assert m(x.bfloat16()).dtype == torch.bfloat16  # a bf16 flow (cpu-bf16) keeps its dtype around the layer


@needs_fbgemm
def test_cpu_int8_plan_swaps_t3_and_estimator_layers_and_stays_close(tiny_ckpt, tiny_tts):
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, memory_plan="cpu-int8")
    assert tts.plan.name == "cpu-int8"
    layer = tts.t3.tfmr.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, DynamicInt8Linear) and isinstance(layer.mlp.down_proj, DynamicInt8Linear)
    block = tts.s3gen.flow.decoder.estimator.mid_blocks[0][1][0]
    assert isinstance(block.attn1.to_q, DynamicInt8Linear) and isinstance(block.ff.net[2], DynamicInt8Linear)
    assert isinstance(tts.t3.speech_head, DynamicInt8Linear)  # a seventh of a full-size decode step in fp32
    assert isinstance(tts.t3.speech_emb, nn.Embedding) and tts.t3.dtype == torch.float32  # embeddings stay fp32
    from cadence.bench.fidelity import compare
    fid = compare(tiny_tts, tts, "cpu", steps=8, n_tokens=40)
    assert fid["t3_logits_rel_err_max"] < 0.1 and fid["t3_cond_top1_agreement"] >= 0.75
    assert fid["mel_snr_db"] > 15, fid
    audio = tts.generate("Hello there.", seed=1, max_new_tokens=10, speech_tokens_only=True)
    assert audio.samples.size > 0 and len(audio.tokens) == 10


def test_cpu_threads_is_checked_and_applied():
    with pytest.raises(ValueError, match="cpu_threads"):
        EngineConfig(cpu_threads=0)
    with pytest.raises(ValueError, match="cpu_threads"):
        EngineConfig(cpu_threads=True)
    before = torch.get_num_threads()
    try:
        assert EngineConfig(cpu_threads=1).apply_cpu_threads() == 1 and torch.get_num_threads() == 1
        assert EngineConfig().apply_cpu_threads() == 1  # None leaves the count in force
    finally:
        torch.set_num_threads(before)


def test_server_setting_and_flag_share_the_name(monkeypatch):
    from cadence.cli_parser import build_parser
    from cadence.server.settings import ServerSettings
    monkeypatch.setenv("CADENCE_CPU_THREADS", "3")
    assert ServerSettings.from_env().cpu_threads == 3
    monkeypatch.setenv("CADENCE_CPU_THREADS", "0")
    with pytest.raises(ValueError, match="cpu_threads"):
        ServerSettings.from_env()
    for argv in (["say", "hi", "-o", "x.wav", "--cpu-threads", "2"], ["serve", "--cpu-threads", "2"], ["bench", "--cpu-threads", "2"]):
        assert build_parser().parse_args(argv).cpu_threads == 2


def test_self_test_times_each_stage_and_describes_the_pace():
    from cadence.bench import selftest
    from cadence.memory.plan import PLANS
    m = selftest.measure(PLANS["fp32"], torch.device("cpu"), tiny=True)
    assert m["t3_tokens_per_s"] > 0 and m["flow_s"] > 0 and m["vocoder_s"] > 0
    assert m["rtf"] == pytest.approx((m["t3_s"] + m["flow_s"] + m["vocoder_s"]) / m["clip_s"])
    slow = dict(m, rtf=3.0)
    assert "playback starts 2.0 x D s" in selftest.describe(slow)[0]
    assert "faster than real time" in selftest.describe(dict(m, rtf=0.5))[0]
    assert m["window_fixed_s"] >= 0 and m["window_token_s"] > 0
    assert "streaming, estimated from these timings (30 s stream" in selftest.describe(m)[1]
    costly = dict(m, token_s=0.016, window_fixed_s=0.5, window_token_s=0.008)  # test_pace's CPU-like pace
    advice = selftest.streaming_advice(costly)
    assert "gaps" in advice and "--stream-windows" in advice and "plays without gaps" in advice
    hopeless = dict(m, token_s=0.04, window_fixed_s=2.0, window_token_s=0.1)
    assert "no window ladder keeps up" in selftest.streaming_advice(hopeless)


def test_self_test_measures_turbo_with_its_own_networks():
    """Turbo: GPT-2 T3 decoding one row, the meanflow estimator (one row, told its end time), 2 steps."""
    from cadence.bench import selftest
    from cadence.family import TURBO
    from cadence.memory.plan import PLANS
    m = selftest.measure(PLANS["fp32"], torch.device("cpu"), tiny=True, family=TURBO)
    assert m["family"] == "turbo" and m["t3_tokens_per_s"] > 0 and m["flow_s"] > 0 and m["window_token_s"] > 0
    assert "turbo model" in selftest.describe(m)[0]


@needs_fbgemm
def test_int8_cache_is_written_once_read_back_identically_and_a_damaged_one_is_rebuilt(tiny_ckpt, tmp_path,
                                                                                       monkeypatch):
    from cadence.memory import cpu_int8_cache
    from cadence.tts import TTS
    monkeypatch.setenv("CADENCE_CACHE", str(tmp_path))
    first = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, memory_plan="cpu-int8")
    path = cpu_int8_cache.cache_path(first.fingerprint)
    assert path.is_file() and path.parent == tmp_path
    written = path.stat().st_mtime_ns
    again = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, memory_plan="cpu-int8")
    assert path.stat().st_mtime_ns == written  # read, not rewritten
    a = first.generate("Hello there.", seed=3, max_new_tokens=8, speech_tokens_only=True)
    b = again.generate("Hello there.", seed=3, max_new_tokens=8, speech_tokens_only=True)
    assert a.tokens == b.tokens and np.array_equal(a.samples, b.samples)
    path.write_bytes(b"not a safetensors file")
    rebuilt = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, memory_plan="cpu-int8")
    c = rebuilt.generate("Hello there.", seed=3, max_new_tokens=8, speech_tokens_only=True)
    assert c.tokens == a.tokens and np.array_equal(c.samples, a.samples)
    assert path.stat().st_size > 1000  # quantised again and written back whole


@needs_fbgemm
def test_plan_bench_on_the_cpu_publishes_each_plans_error_against_fp32(tiny_ckpt, tmp_path):
    import json

    from cadence.cli import main
    out = tmp_path / "plans.json"
    main(["bench", "--device", "cpu", "--model", str(tiny_ckpt), "--plans", "fp32,cpu-int8", "--short-tokens", "8",
          "--long-tokens", "12", "--repeats", "1", "--json", str(out), "--md", str(tmp_path / "plans.md")])
    result = json.loads(out.read_text())
    assert result["device"].startswith("cpu: ") and set(result["plans"]) == {"fp32", "cpu-int8"}
    assert result["plans"]["cpu-int8"]["plan"] == "cpu-int8" and result["plans"]["fp32"]["plan"] == "fp32"
    fid = result["fidelity"]["cpu-int8"]
    assert 0 < fid["t3_logits_rel_err_max"] < 0.2 and fid["mel_snr_db"] > 10
    md = (tmp_path / "plans.md").read_text()
    assert "| cpu-int8 | – | – | – |" in md and "0.48 s RTF" in md  # no device memory on the CPU; the cases' lengths


@needs_fbgemm
def test_checkpoint_quantize_on_the_cpu_fills_the_plans_cache(tiny_ckpt, tmp_path, monkeypatch, capsys):
    from cadence.cli import main
    from cadence.memory import cpu_int8_cache
    monkeypatch.setenv("CADENCE_CACHE", str(tmp_path))
    main(["checkpoint", "quantize", str(tiny_ckpt), "--device", "cpu"])
    printed = capsys.readouterr().out
    written = list(tmp_path.glob("cpu_int8-*.safetensors"))
    assert len(written) == 1 and str(written[0]) in printed and written[0] == cpu_int8_cache.cache_path(
        __import__("cadence.checkpoint", fromlist=["fingerprint"]).fingerprint(tiny_ckpt))


@needs_fbgemm
def test_cpu_bf16_plan_runs_the_flow_in_bf16_around_the_int8_layers(tiny_ckpt):
    """Chosen by `auto` only on CPUs with native bf16; by name it runs anywhere (slowly without AMX/AVX512-BF16)."""
    from cadence.models.s3gen.estimator import TransformerStack
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, memory_plan="cpu-bf16")
    est = tts.s3gen.flow.decoder.estimator
    assert est.final_proj.weight.dtype == torch.bfloat16 and isinstance(est.mid_blocks[0][1][0].attn1.to_q,
                                                                         DynamicInt8Linear)
    stacks = [m for m in est.modules() if isinstance(m, TransformerStack)]
    assert stacks and all(p.dtype == torch.bfloat16 for s in stacks for p in s.parameters())
    hift = tts.s3gen.mel2wav  # the vocoder's convolutions in bf16, its F0 predictor and source in fp32
    assert hift.conv_pre.weight.dtype == torch.bfloat16 and hift.f0_predictor.classifier.weight.dtype == torch.float32
    attends = [m.attend for m in est.modules() if isinstance(m, Attention)]
    assert all(a.func is blocked_attention and a.keywords == {"matmul_dtype": torch.bfloat16} for a in attends)
    assert "forward" in vars(est)  # the rows side by side (`memory.cpu_rows`)
    audio = tts.generate("Hello there.", seed=1, max_new_tokens=10, speech_tokens_only=True)
    assert audio.samples.dtype == np.float32 and np.isfinite(audio.samples).all() and audio.samples.size > 0


def test_fp32_on_the_cpu_keeps_the_estimator_as_loaded(tiny_tts):
    """The parity path: no transform of the CPU plans touches it."""
    est = tiny_tts.s3gen.flow.decoder.estimator
    assert tiny_tts.plan.name == "fp32" and "forward" not in vars(est)
    assert all(m.attend is padded_attention for m in est.modules() if isinstance(m, Attention))
    assert all(p.dtype == torch.float32 for p in est.parameters())


@torch.inference_mode()
def test_transformer_stacks_compute_in_their_own_dtype_and_hand_back_the_callers():
    from cadence.memory.cpu_int8 import place_transformer_stacks_
    from cadence.models.s3gen.estimator import ConditionalDecoder, EstimatorConfig
    torch.manual_seed(0)
    est = ConditionalDecoder(EstimatorConfig(channels=32, n_blocks=1, n_mid=1, heads=2, head_dim=16)).eval()
    x, mu, cond = (torch.randn(2, 80, 24) for _ in range(3))
    args = (x, torch.ones(2, 1, 24), mu, torch.rand(2), torch.randn(2, 80), cond)
    want = est(*args)
    est.bfloat16()
    low_args = tuple(a.bfloat16() for a in args)
    all_bf16 = est(*low_args).float()
    assert place_transformer_stacks_(est, torch.float32) == 3  # down, mid and up stages
    mixed = est(*low_args)
    assert mixed.dtype == torch.bfloat16  # the stacks hand back the convolutions' dtype
    err = lambda got: ((got.float() - want).norm() / want.norm()).item()  # noqa: E731
    assert err(mixed) < 0.05 and err(all_bf16) < 0.05 and not torch.equal(mixed.float(), all_bf16)


def test_blocked_attention_equals_the_fused_kernel_with_and_without_padding(monkeypatch):
    """Every block size, fp32 (to rounding) and bf16 (to bf16's rounding), a padded row beside a full one; fp32
    inputs with bf16 matmuls come back in fp32, laid out as the output projection reads them."""
    torch.manual_seed(0)
    B, H, T, D = 2, 8, 48, 64

    def head_views():  # (B, H, T, D) views of (B, T, H * D) projections, as the estimator's attention passes them
        return torch.randn(B, T, H, D).transpose(1, 2)
    q, k, v = head_views(), head_views(), head_views()
    mask = torch.ones(B, 1, T)
    mask[1, :, 30:] = 0
    for b in (None, key_padding(mask, torch.float32)):
        want = padded_attention(q, k, v, b)
        for budget in (1, 2 * T * T * 4, 10 ** 9):  # blocks of 1, 2 and all 8 heads
            monkeypatch.setattr("cadence.layers.blocked_attention.SCORE_BLOCK_BYTES", budget)
            got = blocked_attention(q, k, v, b)
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (budget, (got - want).abs().max())
        low = blocked_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(),
                                None if b is None else key_padding(mask, torch.bfloat16))
        assert low.dtype == torch.bfloat16 and ((low.float() - want).norm() / want.norm()) < 0.02
        mixed = blocked_attention(q, k, v, b, matmul_dtype=torch.bfloat16)
        assert mixed.dtype == torch.float32 and ((mixed - want).norm() / want.norm()) < 0.02
        assert mixed.transpose(1, 2).is_contiguous()  # (B, T, H, D): the output projection's reshape is a view


def test_heads_per_block_keeps_the_scores_within_the_budget():
    assert heads_per_block(8, 600, 2) == 4  # 4 x 600 x 600 x 2 B = 2.9 MB of 5 MB
    assert heads_per_block(8, 1300, 2) == 1  # one head's scores (3.4 MB) already fill it
    assert heads_per_block(8, 3000, 2) == 1  # never fewer than one head
    assert heads_per_block(6, 10, 2) == 2  # a power-of-two divisor of the head count
    assert heads_per_block(8, 10, 2) == 8


_MMAPPED = """
import ctypes, sys
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = Info, ctypes.c_void_p, [ctypes.c_void_p]
if sys.argv[1] == "keep":
    from cadence.engine.host_memory import keep_freed_blocks
    assert keep_freed_blocks()
before = libc.mallinfo2().hblkhd
block = libc.malloc(6 << 20)  # an attention block's scores at 600 frames: 5.8 MB
print(libc.mallinfo2().hblkhd - before)
libc.free(block)
"""


def test_a_cpu_engine_keeps_freed_blocks_instead_of_mapping_each_anew(tiny_ckpt, monkeypatch):
    """glibc maps a block of a few MB on allocation and unmaps it on free (fresh pages each time a CPU forward
    allocates its scores again); `keep_freed_blocks` makes it reuse heap memory, and a CPU engine sets it."""
    import subprocess
    import sys
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's allocator")
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 - glibc >= 2.33
    except (OSError, AttributeError):
        pytest.skip("no glibc mallinfo2 here")

    def mapped(mode: str) -> int:  # a fresh process: its thresholds not yet moved by earlier frees
        out = subprocess.run([sys.executable, "-c", _MMAPPED, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())
    assert mapped("default") >= 6 << 20 and mapped("keep") == 0
    from cadence.tts import TTS
    calls = []
    monkeypatch.setattr("cadence.tts.keep_freed_blocks", lambda: calls.append(1) or True)
    TTS.from_dir(tiny_ckpt, device="cpu", watermark=False).close()
    assert calls
