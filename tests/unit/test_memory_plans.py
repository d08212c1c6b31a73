import pytest
import torch
from torch import nn

from cadence.memory.int8 import Int8Linear, quantize_int8_
from cadence.memory.plan import PLANS, choose_plan, parse_size_mb


def test_parse_size():
    assert parse_size_mb("1.5GB") == 1536 and parse_size_mb("800MB") == 800 and parse_size_mb("1200") == 1200
    with pytest.raises(ValueError, match="memory size"):
        parse_size_mb("lots")


def test_cpu_plans_only_set_precision():
    plan, why = choose_plan("auto", None, torch.device("cpu"))
    assert plan.name in ("cpu-int8", "cpu-bf16", "fp32") and why.startswith("cpu:")
    plan, _ = choose_plan("offload", None, torch.device("cpu"))
    assert not plan.offload and not plan.compile
    with pytest.raises(ValueError, match="unknown memory plan"):
        choose_plan("tiny", None, torch.device("cpu"))


def test_budget_choice_follows_measured_peaks(monkeypatch):
    dev = torch.device("cuda")
    peaks = {k: p.expected_peak_mb for k, p in PLANS.items()}
    assert all(peaks[k] for k in ("bf16", "bf16-lowmem", "int8", "offload")), peaks
    assert choose_plan("auto", f"{peaks['bf16'] + 1}MB", dev)[0].name == "bf16"
    assert choose_plan("auto", f"{peaks['bf16'] - 1}MB", dev)[0].name in ("bf16-lowmem", "int8", "offload")
    assert choose_plan("auto", f"{peaks['offload'] + 1}MB", dev)[0].name in ("int8", "offload")
    with pytest.raises(ValueError, match="no memory plan fits"):
        choose_plan("auto", f"{peaks['offload'] - 1}MB", dev)
    monkeypatch.setattr("cadence.memory.plan.free_vram_mb", lambda d: 100000.0)
    assert choose_plan("auto", "auto", dev)[0].name == "bf16"


def test_int8_linear_is_close_and_small():
    torch.manual_seed(0)
    lin = nn.Linear(256, 512, bias=False)
    q = Int8Linear.from_linear(lin, torch.float32)
    x = torch.randn(3, 256)
    err = (q(x) - lin(x)).norm() / lin(x).norm()
    assert err < 1e-2 and q.weight.dtype == torch.int8 and q.weight.element_size() == 1


def test_int8_plan_generates_on_cpu(tiny_ckpt):
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, memory_plan="int8", dtype="float32")
    layer = tts.t3.tfmr.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, Int8Linear) and isinstance(layer.mlp.down_proj, Int8Linear)
    assert tts.generate("Hello.", seed=1, max_new_tokens=8).samples.size > 0


def test_quantize_keeps_biases():
    """GPT-2's projections (Turbo) carry a bias: quantised with it, added after the scaled matmul."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16, bias=False))
    x = torch.randn(3, 16)
    ref = m(x)
    assert quantize_int8_(m, torch.float32) == 2 and isinstance(m[0], Int8Linear) and m[1].bias is None
    assert torch.allclose(m(x), ref, rtol=0.05, atol=0.02)


def test_doctor_runs_without_cuda():
    from cadence.doctor import report
    lines = report()
    text = "\n".join(lines)
    assert "plans:" in text and ("no CUDA device" in text or "VRAM" in text)
    assert lines[1].startswith("cadence ") and "CPU:" in text and "voice library:" in text
    assert "Perth watermark" in text and ("PyAV" in text)
    assert sum(line.startswith("  ") for line in lines) >= 7  # one plan per line, the CPU's too
    assert any(line.startswith("plan on the CPU: ") for line in lines)


def test_saved_int8_checkpoint_loads_identically(tiny_ckpt, tmp_path):
    import shutil

    from cadence.memory.int8 import QUANT_FILE
    from cadence.tts import TTS
    ck = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, ck)
    a = TTS.from_dir(ck, device="cpu", watermark=False, memory_plan="int8", dtype="float32")
    assert a.save_quantized() == ck / QUANT_FILE
    b = TTS.from_dir(ck, device="cpu", watermark=False, memory_plan="int8", dtype="float32")
    for (k, x), (_, y) in zip(a.t3.state_dict().items(), b.t3.state_dict().items()):
        assert torch.equal(x, y), k
    ra = a.generate("Hello.", seed=3, max_new_tokens=8)
    rb = b.generate("Hello.", seed=3, max_new_tokens=8)
    assert ra.tokens == rb.tokens
    with pytest.raises(ValueError, match="no int8 weights"):
        TTS.from_dir(ck, device="cpu", watermark=False).save_quantized()


def test_windowed_vocoder_matches_length_and_stays_close_to_one_piece(tiny_tts):
    import numpy as np
    import torch

    from cadence.engine.audio_runner import AudioRunner
    from cadence.engine.rng import RequestRNG
    mel = torch.randn(1, 80, 130, generator=torch.Generator().manual_seed(0))
    whole = tiny_tts.audio_runner.vocode(mel, RequestRNG(1, "cpu"))[0].numpy()
    windowed = AudioRunner(tiny_tts.s3gen, vocoder_window_frames=40).vocode(mel, RequestRNG(1, "cpu"))[0].numpy()
    assert windowed.shape == whole.shape
    assert np.isfinite(windowed).all() and np.abs(windowed).max() <= 0.99 + 1e-6  # crossfade of clipped edges
    # Same mel, same vocoder: the windows differ only in their noise draws and cross-faded edges.
    corr = np.corrcoef(whole, windowed)[0, 1]
    assert corr > 0.5, corr


def test_lease_packs_groups_and_lends_copies():
    from cadence.memory.lease import ALIGN, OnDemand
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3, bias=False))
    model[1].register_buffer("scale", torch.arange(3, dtype=torch.int8))  # an odd-sized, odd-typed buffer
    x = torch.randn(2, 5)
    want = model(x)
    lease = OnDemand([model], torch.device("cpu"), pipeline=[model[2]])
    # every tensor in exactly one group, each group one buffer, each tensor on an aligned offset
    assert len(lease.groups) == 2 and sum(len(g.slots) for g in lease.groups) == 6
    assert all(off % ALIGN == 0 for g in lease.groups for _, _, _, off, *_ in g.slots)
    assert model[2].weight.untyped_storage().data_ptr() == lease.groups[1].host.untyped_storage().data_ptr()
    assert torch.equal(model(x), want)
    with lease:
        lent = model[0].weight.untyped_storage().data_ptr()
        assert lent != lease.groups[0].host.untyped_storage().data_ptr()
        assert torch.equal(model(x), want) and torch.equal(model[1].scale, torch.arange(3, dtype=torch.int8))
    assert model[0].weight.untyped_storage().data_ptr() == lease.groups[0].host.untyped_storage().data_ptr()
    assert torch.equal(model(x), want) and not model[0].weight.requires_grad


def test_lease_stores_a_shared_tensor_once():
    from cadence.memory.lease import ALIGN, OnDemand
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    b.weight = a.weight  # tied
    lease = OnDemand([nn.ModuleList([a, b])], torch.device("cpu"))
    assert lease.nbytes == ALIGN  # 64 bytes of weight, stored once
    with lease:
        assert a.weight.data_ptr() == b.weight.data_ptr()
