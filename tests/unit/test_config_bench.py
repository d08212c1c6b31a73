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
    assert tts.t3.speech_head.weight.dtype == torch.bfloat16
    assert tts.s3gen.mel2wav.conv_pre.weight.dtype == torch.float32  # vocoder stays fp32
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
