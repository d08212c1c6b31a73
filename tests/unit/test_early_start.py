"""`cadence serve` starts its helper processes before it imports torch (`cadence.early_start`)."""

import subprocess
import sys
import time

import pytest

from cadence import early_start
from cadence.early_start import HelperPlan, plan
from cadence.engine import watermark_pool
from cadence.engine.cpu_priority import HELPER_NICE
from tests.unit.test_watermark_workers import _alive

LANES = watermark_pool.lane_count()
TEAM = watermark_pool.lane_team(LANES)
ENCODERS = early_start.default_encode_workers()


@pytest.mark.parametrize("argv, env, gpu, expected", [
    (["serve"], {}, True, HelperPlan(LANES, TEAM, ENCODERS, HELPER_NICE)),
    (["serve", "--model", "x", "--device", "cuda:1", "--encode-workers", "3"], {}, False,
     HelperPlan(LANES, TEAM, 3, HELPER_NICE)),
    (["serve", "--no-watermark"], {}, True, HelperPlan(0, 0, ENCODERS, HELPER_NICE)),
    (["serve"], {"CADENCE_WATERMARK": "off"}, True, HelperPlan(0, 0, ENCODERS, HELPER_NICE)),
    (["serve", "--watermark-device", "cuda"], {}, True, HelperPlan(0, 0, ENCODERS, HELPER_NICE)),
    (["serve"], {"CADENCE_ENCODE_WORKERS": "2", "CADENCE_DEVICE": "cuda"}, False,
     HelperPlan(LANES, TEAM, 2, HELPER_NICE)),
    (["serve"], {}, False, None),  # auto on a machine without a GPU: a CPU engine wants no helpers
    (["serve", "--device", "cpu"], {}, True, None),
    (["serve"], {"CADENCE_DEVICE": "cpu"}, True, None),
    (["serve", "--ray"], {}, True, None),  # each Ray replica starts its own
    (["serve", "--help"], {}, True, None),
    (["serve", "--encode-workers", "many"], {}, True, None),  # the full parser reports it
    (["serve", "--device"], {}, True, None),
    (["say", "hello"], {}, True, None),
    ([], {}, True, None),
])
def test_the_helpers_a_command_line_wants(argv, env, gpu, expected):
    assert plan(argv, env, gpu) == expected


def test_a_gpu_is_likely_where_the_driver_lists_one_and_cuda_devices_are_not_hidden(tmp_path):
    gpus = tmp_path / "gpus"
    assert not early_start.gpu_likely({}, gpus)
    gpus.mkdir()
    assert not early_start.gpu_likely({}, gpus)
    (gpus / "0000:19:00.0").mkdir()
    assert early_start.gpu_likely({}, gpus)
    assert early_start.gpu_likely({"CUDA_VISIBLE_DEVICES": "1"}, gpus)
    assert not early_start.gpu_likely({"CUDA_VISIBLE_DEVICES": ""}, gpus)
    assert not early_start.gpu_likely({"CUDA_VISIBLE_DEVICES": "-1"}, gpus)


def test_the_command_line_module_does_not_import_torch():
    """What lets `serve` start its helpers first: everything before `early_start.start` is light."""
    out = subprocess.run([sys.executable, "-c", "import sys, cadence.cli, cadence.early_start; "
                          "print(sorted(m for m in ('torch', 'fastapi', 'perth', 'triton') if m in sys.modules))"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_server_adopts_the_helpers_the_command_started_and_the_rest_are_closed(monkeypatch):
    from cadence.server.encode_pool import EncodePool
    monkeypatch.setattr(early_start, "gpu_likely", lambda *a, **k: True)
    monkeypatch.setattr(EncodePool, "processes", True)
    started = early_start.start(["serve", "--encode-workers", "2"])
    assert started == HelperPlan(LANES, TEAM, 2, HELPER_NICE)
    spares = list(watermark_pool._spares)
    encoders = [w.pid for w in early_start._encoders]
    assert len(spares) == LANES and len(encoders) == 2
    pool = EncodePool(1)
    adopted = []
    try:
        pool.start("cuda", HELPER_NICE)  # as the app does beside a GPU engine
        adopted = watermark_pool.start_workers(LANES, TEAM, HELPER_NICE)  # as the engine's Postprocess does
        assert [w.pid for w in pool.workers] == encoders[:1]
        assert adopted == spares and not watermark_pool._spares
        early_start.close_unadopted()  # the second encoder: nobody took it
        deadline = time.time() + 10
        while _alive(encoders[1]) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(encoders[1]) and not early_start._encoders
        assert pool.wait_ready(120) and all(w.process.wait_ready(120) for w in adopted)  # working, not closed
    finally:
        pool.close()
        for w in adopted:
            w.close()
        early_start.close_unadopted()


def test_helpers_started_for_a_wrong_guess_are_closed_and_the_settings_win(monkeypatch):
    """The guess said a GPU engine; the engine came up elsewhere (nice 0): nothing is adopted, all is closed."""
    from cadence.server.encode_pool import EncodePool
    monkeypatch.setattr(early_start, "gpu_likely", lambda *a, **k: True)
    monkeypatch.setattr(EncodePool, "processes", True)
    early_start.start(["serve", "--encode-workers", "1"])
    pids = [w.pid for w in early_start._encoders] + [w.pid for w in watermark_pool._spares]
    pool = EncodePool(1)
    try:
        pool.start("cpu", 0)
        assert [w.pid for w in pool.workers] != pids[:1]  # a fresh one, with the engine's own settings
        early_start.close_unadopted()
        deadline = time.time() + 10
        while any(_alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids)
    finally:
        pool.close()
        early_start.close_unadopted()
