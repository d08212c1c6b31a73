import json
import subprocess
import sys

import pytest
import torch

from cadence.config import EngineConfig


def test_engine_config_validation():
    assert EngineConfig().model_dtype(torch.device("cpu")) == torch.float32
    assert EngineConfig().model_dtype(torch.device("cuda")) == torch.bfloat16
    assert EngineConfig(dtype="float16").model_dtype(torch.device("cpu")) == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        EngineConfig(dtype="int3")
    with pytest.raises(ValueError, match="eos_check_every"):
        EngineConfig(eos_check_every=0)
    with pytest.raises(ValueError, match="unknown engine option"):
        EngineConfig.from_kwargs(dtyp="float32")


def test_bf16_on_cpu_generates(tiny_ckpt):
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, dtype="bfloat16")
    assert tts.t3.dtype == torch.bfloat16
    # `dtype` is T3's and the flow's: the vocoder keeps its plan's (fp32, or bf16 convolutions under cpu-bf16)
    assert tts.s3gen.mel2wav.conv_pre.weight.dtype == tts.plan.vocoder_dtype
    assert TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, dtype="bfloat16", vocoder_dtype="float32",
                        memory_plan="cpu-bf16" if tts.plan.cpu_int8 else "fp32").s3gen.mel2wav.conv_pre.weight.dtype \
        == torch.float32  # and `vocoder_dtype` sets it
    a = tts.generate("Hello.", seed=1, max_new_tokens=10)
    assert a.samples.size > 0 and abs(a.samples).max() <= 0.99 + 1e-6


def test_speech_tokens_only_keeps_every_token(tiny_tts):
    a = tiny_tts.generate("Hello there.", seed=2, max_new_tokens=40, speech_tokens_only=True)
    assert len(a.tokens) == 40 and max(a.tokens) < 6561


def test_bench_cli_writes_json_and_markdown(tiny_ckpt, tmp_path):
    j, m = tmp_path / "b.json", tmp_path / "b.md"
    r = subprocess.run([sys.executable, "-m", "cadence.cli", "bench", "--model", str(tiny_ckpt), "--device", "cpu",
                        "--repeats", "1", "--short-tokens", "5", "--long-tokens", "10", "--json", str(j), "--md", str(m)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(j.read_text())
    assert data["cadence"]["long"]["runs"][0]["t3_tokens"] == 10
    assert "| long: RTF |" in m.read_text()
    bad = subprocess.run([sys.executable, "-m", "cadence.cli", "bench", "--model", str(tiny_ckpt), "--device", "cpu",
                          "--repeats", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_bf16_vocoder_keeps_f0_path_fp32(tiny_ckpt):
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, vocoder_dtype="bfloat16")
    hift = tts.s3gen.mel2wav
    assert hift.conv_pre.weight.dtype == torch.bfloat16
    assert hift.f0_predictor.classifier.weight.dtype == torch.float32 == hift.m_source.l_linear.weight.dtype
    a = tts.generate("Hi.", seed=1, max_new_tokens=8)
    assert a.samples.size > 0


def test_plans_table_reports_memory_after_consecutive_generations():
    from cadence.bench.plans import plans_markdown
    case = {"peak_allocated_mb": 900.0, "peak_reserved_mb": 1000.0, "process_mb": 1500.0,
            "rtf": {"median": 0.06}, "t3_tok_per_s": {"median": 490.0}}
    flat = {"n": 200, "allocated_mb": {"min": 70.4, "max": 70.4}, "reserved_mb": {"min": 682.0, "max": 690.0},
            "growth_allocated_mb": 0.0, "growth_reserved_mb": 8.0}
    result = {"device": "test", "torch": "x", "repeats": 2,
              "plans": {"offload": {"long": case, "short": case, "load_s": 6.0, "consecutive": flat},
                        "int8": {"long": case, "short": case, "load_s": 5.0}}}
    md = plans_markdown(result)
    assert "| offload | 200 | 70.4–70.4 | +0.0 | 682–690 | +8 |" in md
    assert md.count("| int8 |") == 1  # a plan without the consecutive run has no row in that table


def test_the_concurrency_bench_fits_its_requests_to_a_small_checkpoint(tiny_tts):
    """`bench --concurrency` asks for 30 s requests (750 tokens): on a checkpoint or slots that hold fewer, as many
    as fit (it used to ask for 657 tokens of a 512-position tiny model and abort)."""
    from cadence.bench.concurrency import LONG_TEXT, _fit
    from cadence.engine.request import Request
    fit = _fit(tiny_tts, 750)
    assert fit <= tiny_tts.t3.cfg.max_speech_tokens and fit < 750
    audio = tiny_tts.engine.submit(Request(LONG_TEXT, None, tiny_tts.params(seed=1, max_new_tokens=fit))).result()
    assert audio.samples.size > 0  # it fits: no error
    assert _fit(tiny_tts, 10) == 10
