"""The postprocess lanes' watermark worker processes: the same marks as in the engine's process, in order, a dead
worker replaced without losing a chunk, no worker outliving its engine."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from cadence import watermark as wm
from cadence import pipe_worker
from cadence.engine.postprocess import Postprocess
from cadence.engine.watermark_pool import WatermarkWorker

pytestmark = pytest.mark.skipif(not wm.preload("cpu"), reason="Perth (cadence-tts[watermark]) is not installed")

SR = 24000


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 180 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _in_process(wav: np.ndarray) -> np.ndarray:
    mine = torch.get_num_threads()
    torch.set_num_threads(1)  # the worker's team below: the same reduction order
    try:
        return wm.apply(wav.copy(), SR, "cpu")[0]
    finally:
        torch.set_num_threads(mine)


@pytest.fixture(scope="module")
def worker():
    w = WatermarkWorker(torch_threads=1)
    assert w.wait_ready(120), "the worker did not load Perth"
    yield w
    w.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_workers_marks_equal_the_engine_process_marks_chunk_by_chunk_in_order(worker):
    clips = [_clip(s, i) for i, s in enumerate((1.0, 0.37, 2.5))]
    outs = [worker.apply(c, SR) for c in clips]
    for clip, (marked, flag) in zip(clips, outs):
        assert flag and marked.dtype == np.float32 and marked.shape == clip.shape
        np.testing.assert_array_equal(marked, _in_process(clip))
        assert not np.array_equal(marked, clip)  # it did mark


def test_a_killed_worker_is_replaced_and_its_chunk_is_left_to_the_caller(worker):
    old = worker.pid
    os.kill(old, signal.SIGKILL)
    time.sleep(0.2)
    assert worker.apply(_clip(0.5, 7), SR) is None  # the caller marks this one itself
    assert worker.pid != old and worker.restarts == 1
    assert worker.wait_ready(120)
    marked, flag = worker.apply(_clip(0.5, 7), SR)
    assert flag and marked.size == int(0.5 * SR)


def test_a_lane_stops_restarting_a_worker_that_keeps_dying(monkeypatch):
    monkeypatch.setattr(pipe_worker, "MAX_RESTARTS", 0)
    w = WatermarkWorker(torch_threads=1)
    try:
        assert w.wait_ready(120)
        os.kill(w.pid, signal.SIGKILL)
        time.sleep(0.2)
        assert w.apply(_clip(0.2, 1), SR) is None and w.pid is None
        assert w.apply(_clip(0.2, 1), SR) is None  # for good: the lane marks in-process
    finally:
        w.close()


def test_a_worker_without_perth_says_so_and_takes_no_chunks(tmp_path, monkeypatch):
    (tmp_path / "perth.py").write_text("raise ImportError('no perth here')\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    w = WatermarkWorker(torch_threads=1)
    try:
        assert w.wait_ready(120) is False
        assert w.apply(_clip(0.2, 1), SR) is None
    finally:
        w.close()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_worker_exits_when_its_engine_process_dies():
    code = ("import time; from cadence.engine.watermark_pool import WatermarkWorker\n"
            "w = WatermarkWorker(1); assert w.wait_ready(120); print(w.pid, flush=True); time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)
    finally:
        parent.kill()


def test_the_engine_marks_through_its_lanes_workers(tiny_ckpt):
    """A CPU engine forced onto workers: its requests come back marked, by the worker (counted), the same audio
    as the in-process lane gives."""
    from cadence.engine.postprocess import Postprocess
    from cadence.engine.request import Request
    from cadence.sampling_params import SamplingParams
    from cadence.tts import TTS
    outs = {}
    for processes in (True, False):
        Postprocess.worker_processes = processes
        tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=True, memory_plan="fp32")
        try:
            post = tts.engine.post
            assert len(post.workers) == (len(post._lanes) if processes else 0)
            assert all(w.wait_ready(120) for w in post.workers)
            done = tts.submit(Request("Marked in a worker.", None, SamplingParams(seed=5, max_new_tokens=16)))
            outs[processes] = done.result(timeout=120)
            assert outs[processes].watermarked
            if processes:
                assert sum(w.chunks_marked for w in post.workers) == 1
                pids = [w.pid for w in post.workers]
        finally:
            tts.close()
            Postprocess.worker_processes = None
    assert not any(_alive(p) for p in pids)  # closed with the engine
    np.testing.assert_allclose(outs[True].samples, outs[False].samples, atol=1e-6)


def test_a_servers_helper_processes_start_before_its_checkpoint_loads_and_ready_waits_for_them(tiny_ckpt,
                                                                                              monkeypatch):
    """The watermark's and the encoders' worker processes import (seconds) while the checkpoint loads rather than
    after it, `ready` means the first requests find them working, and the server's own process never imports
    Perth for them (that import would hold its interpreter lock beside the load)."""
    import threading

    import httpx
    import uvicorn

    import cadence.server.app as app_module
    from cadence.engine import watermark_pool
    from cadence.server import ServerSettings, create_app
    from cadence.server.encode_pool import EncodePool
    from tests.unit.test_server import _free_port
    monkeypatch.setattr(Postprocess, "worker_processes", True)  # as beside a GPU engine
    monkeypatch.setattr(EncodePool, "processes", True)
    monkeypatch.setattr(app_module, "HELPERS_MAX_S", 120.0)  # a busy CI machine's imports: the bound is not tested here
    in_process, started_before_load = [], []
    monkeypatch.setattr(wm, "preload", lambda device="cpu": in_process.append(device))
    real_load = app_module.load_tts

    def load_tts(settings):
        started_before_load.append(list(watermark_pool._spares))
        return real_load(settings)
    monkeypatch.setattr(app_module, "load_tts", load_tts)
    settings = ServerSettings(model=str(tiny_ckpt), port=_free_port(), device="cpu", memory_plan="fp32",
                              encode_workers=1)
    app = create_app(settings)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.port}"
    try:
        health, deadline = {}, time.time() + 240
        while health.get("status") not in ("ready", "error") and time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(base + "/health").json()
            time.sleep(0.05)
        assert health["status"] == "ready", health
        post = app.state.cadence.tts.engine.post
        assert started_before_load and len(post.workers) >= 1
        assert post.workers == started_before_load[0]  # the engine adopted those very workers, none was replaced
        assert not watermark_pool._spares
        assert all(w.process.usable for w in post.workers)
        assert list(health["startup"])[-4:] == ["watermark", "encoders", "first_graphs", "ready"]
        r = httpx.post(base + "/v1/audio/speech", timeout=120,
                       json={"input": "Served marked.", "voice": "default", "response_format": "mp3",
                             "max_new_tokens": 16, "seed": 3})
        assert r.status_code == 200 and len(r.content) > 500
        assert sum(w.chunks_marked for w in post.workers) >= 1 and in_process == []
    finally:
        srv.should_exit = True
        thread.join(30)


def test_a_worker_warms_perth_after_saying_ready_and_before_its_first_request(monkeypatch):
    import io

    from cadence.engine import watermark_worker

    out = io.BytesIO()
    calls = []

    def fake_apply(wav, rate, device):
        calls.append((rate, wav.size, device, out.tell()))  # what had been replied when the warm-up ran
        return wav, True

    monkeypatch.setattr(wm, "preload", lambda device="cpu": True)
    monkeypatch.setattr(wm, "apply", fake_apply)
    assert watermark_worker.serve(io.BytesIO(b""), out) == 0  # no request: the warm-up alone
    assert calls == [(watermark_worker.WARM_RATE, watermark_worker.WARM_RATE // 4, "cpu", len(out.getvalue()))]
    assert calls[0][3] > 0, "the worker said it was ready before warming, not after"
