import os
import shutil
import tempfile

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# the CPU plans' int8 cache: per test session, never the user's own, removed when the session ends (a full-size
# checkpoint's cache is 360 MB)
_SESSION_CACHE = None if "CADENCE_CACHE" in os.environ else tempfile.mkdtemp(prefix="cadence-cache-")
if _SESSION_CACHE:
    os.environ["CADENCE_CACHE"] = _SESSION_CACHE
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_sessionfinish(session, exitstatus):
    if _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from cadence.random_checkpoint import make_random_checkpoint
    return make_random_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0, tiny=True)


@pytest.fixture(scope="session")
def tiny_tts(tiny_ckpt):
    from cadence.tts import TTS
    # fp32: the reference-parity path, batch-invariant (the CPU's default plan, cpu-int8, quantises each matmul's
    # input as a whole, so a request's numbers depend slightly on what it is decoded beside)
    return TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, memory_plan="fp32")


@pytest.fixture(scope="session")
def ref_wav_path(tmp_path_factory):
    import soundfile as sf

    from cadence.random_checkpoint import synthetic_voice
    path = tmp_path_factory.mktemp("audio") / "ref_24k.wav"
    # 9.98 s like the official test clip: an odd mel length (499 frames) exercises the prompt alignment.
    sf.write(str(path), synthetic_voice(seconds=9.98), 24000, subtype="PCM_16")
    return path


def rel_err(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def snr_db(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(10 * np.log10((b ** 2).sum() / max(((a - b) ** 2).sum(), 1e-30)))


def check_env_flag(monkeypatch, field: str, text: str, expected: bool, bad_text: str) -> None:
    """CADENCE_<FIELD>=text gives ServerSettings.<field> == expected; a value that is no flag is refused with an
    error naming the variable and the value. The variable is unset afterwards."""
    from cadence.server.settings import ServerSettings
    env = "CADENCE_" + field.upper()
    monkeypatch.setenv(env, text)
    assert getattr(ServerSettings.from_env(), field) is expected
    monkeypatch.setenv(env, bad_text)
    with pytest.raises(ValueError, match=f"{env}={bad_text!r}"):
        ServerSettings.from_env()
    monkeypatch.delenv(env)


def run_kernel_check(code: str, device: str = "cpu") -> None:
    """Run a kernel check (Python source printing "ok") in a process of its own: on the CPU through Triton's
    interpreter, or compiled on CUDA (`CHECK_DEVICE` tells the check where its tensors go)."""
    import subprocess
    import sys
    pytest.importorskip("triton")
    env = {**os.environ, "CHECK_DEVICE": device}
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
