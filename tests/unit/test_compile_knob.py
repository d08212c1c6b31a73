"""`compile` has one name end to end (EngineConfig, ServerSettings and CADENCE_COMPILE, `serve --compile`, the
serve bench), and on a machine without CUDA it leaves every module as it was."""

import pytest

from cadence.cli_parser import build_parser
from cadence.config import EngineConfig
from cadence.server.settings import ServerSettings
from tests.conftest import check_env_flag


def test_the_knob_has_one_name_everywhere(monkeypatch):
    with pytest.raises(ValueError, match="compile"):
        EngineConfig(compile="yes")
    assert EngineConfig(compile=True).compile is True
    assert ServerSettings.from_env().compile is None
    check_env_flag(monkeypatch, "compile", "on", True, "maybe")
    parser = build_parser()
    assert parser.parse_args(["serve", "--compile"]).compile is True
    assert parser.parse_args(["serve", "--no-compile"]).compile is False
    assert parser.parse_args(["serve"]).compile is None
    assert ServerSettings.from_env(compile=parser.parse_args(["serve", "--no-compile"]).compile).compile is False
    assert parser.parse_args(["bench", "serve", "--compile"]).compile is True


def test_compile_is_a_no_op_without_cuda(tiny_ckpt):
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, compile=True)
    assert not tts.plan.compile
    forwards = [m.forward for m in tts.t3.tfmr.layers]
    assert all(getattr(f, "__self__", None) is m for f, m in zip(forwards, tts.t3.tfmr.layers))  # plain methods
