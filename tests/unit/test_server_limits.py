"""Backpressure and timeouts of the server, on a deliberately small engine: one KV slot, a queue of one,
a short request timeout."""

import threading
import time

import httpx
import torch
import pytest

from cadence.bench.serve import wait_idle
from tests.unit.test_server import SETTINGS, serve_in_thread


@pytest.fixture(scope="module")
def small_server(tiny_ckpt, tmp_path_factory):
    yield from serve_in_thread(tiny_ckpt, {"max_batch": 1}, max_queue=1, request_timeout_s=1.0,
                               library=str(tmp_path_factory.mktemp("voices")))


def _post(base, body, out, key):
    out[key] = httpx.post(base + "/v1/audio/speech", json=body, timeout=60)


def test_a_full_queue_answers_429_with_retry_after_and_a_slow_request_504(small_server):
    long = {"input": "A long request that holds the only slot.", "max_new_tokens": 500, "seed": 1,
            "stream": False, "response_format": "pcm"}
    results: dict = {}
    first = threading.Thread(target=_post, args=(small_server, long, results, "first"))
    first.start()
    deadline = time.time() + 10
    while httpx.get(small_server + "/health").json()["running"] == 0 and time.time() < deadline:
        time.sleep(0.02)
    second = threading.Thread(target=_post, args=(small_server, dict(long, seed=2), results, "second"))
    second.start()
    while httpx.get(small_server + "/health").json()["waiting"] == 0 and time.time() < deadline:
        time.sleep(0.02)
    third = httpx.post(small_server + "/v1/audio/speech", json=dict(long, seed=3), timeout=60)
    assert third.status_code == 429 and third.headers["retry-after"] == "2"
    assert third.json()["error"]["code"] == "queue_full"
    first.join()
    second.join()
    # 500 tokens in one piece take longer than the 1 s timeout here: 504, and the engine lets go of them.
    assert results["first"].status_code == 504 and "no audio within" in results["first"].json()["error"]["message"]
    h = wait_idle(small_server, 30)
    assert h["running"] == 0 and h["waiting"] == 0
    SETTINGS[small_server].request_timeout_s = 120.0  # the server goes on: however slow this machine, no 504 now
    quick = httpx.post(small_server + "/v1/audio/speech", json={"input": "Hi.", "max_new_tokens": 10, "seed": 4,
                                                                 "response_format": "pcm"}, timeout=60)
    assert quick.status_code == 200 and len(quick.content) > 0
    metrics = httpx.get(small_server + "/metrics").text
    assert 'cadence_requests_total{status="rejected"} 1.0' in metrics
    assert 'cadence_requests_total{status="timeout"}' in metrics


POISON = 666  # requests with this seed run out of GPU memory in S3Gen


def _oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")


@pytest.fixture(scope="module")
def oom_server(tiny_ckpt, tmp_path_factory):
    """A server whose S3Gen runs out of memory for one request's seed: a CUDA OOM cannot be forced on the CPU,
    so it is raised where the real one would come from (the vocoder/flow batch on the audio worker)."""
    def inject(tts):
        real = tts.audio_runner.synthesize_batch

        def synthesize_batch(items, **options):
            if any(rng.seed == POISON for _, _, rng in items):
                raise _oom()
            return real(items, **options)
        tts.audio_runner.synthesize_batch = synthesize_batch
    yield from serve_in_thread(tiny_ckpt, {}, prepare=inject, library=str(tmp_path_factory.mktemp("voices")))


def test_an_out_of_memory_request_fails_alone_with_503_and_the_server_goes_on(oom_server, monkeypatch):
    from cadence.engine import audio_worker
    real_windows = audio_worker.render_windows

    def render_windows(runner, items):  # streams: the same OOM in their first window
        if any(st.rng.seed == (POISON + 0x5EED) % 2 ** 63 for st, _, _ in items):
            raise _oom()
        return real_windows(runner, items)
    monkeypatch.setattr(audio_worker, "render_windows", render_windows)
    body = {"input": "This one asks for too much memory.", "max_new_tokens": 40, "response_format": "pcm"}
    results: dict = {}
    bad = [threading.Thread(target=_post, args=(oom_server, dict(body, seed=POISON, stream=stream), results, stream))
           for stream in (False, True)]
    good = threading.Thread(target=_post, args=(oom_server, dict(body, seed=5, stream=False), results, "good"))
    for t in (*bad, good):
        t.start()
    for t in (*bad, good):
        t.join()
    for stream in (False, True):
        r = results[stream]
        assert r.status_code == 503, (stream, r.status_code)
        assert "OutOfMemoryError" in r.json()["error"]["message"] and r.json()["error"]["type"] == "server_error"
    assert results["good"].status_code == 200 and len(results["good"].content) > 0  # its batch-mate lived
    h = wait_idle(oom_server, 30)
    assert h["running"] == 0 and h["waiting"] == 0 and h["status"] == "ready"
    after = httpx.post(oom_server + "/v1/audio/speech", json=dict(body, seed=6), timeout=60)
    assert after.status_code == 200 and len(after.content) > 0
    assert 'cadence_requests_total{status="error"} 2.0' in httpx.get(oom_server + "/metrics").text


def test_after_an_oom_each_request_is_rendered_alone_with_its_own_random_draws():
    from cadence.engine.oom import retry_alone_on_oom
    from cadence.engine.rng import RequestRNG

    def render(idx, rngs, poison):
        if len(idx) > 1 and poison in idx or idx == [poison]:
            raise _oom()
        return [torch.randn(3, generator=rngs[i].device) for i in idx]
    fresh = [RequestRNG(s, "cpu") for s in (1, 2, 3)]
    clean = retry_alone_on_oom(lambda idx: render(idx, fresh, poison=-1), 3, fresh)
    rngs = [RequestRNG(s, "cpu") for s in (1, 2, 3)]
    groups = retry_alone_on_oom(lambda idx: render(idx, rngs, poison=1), 3, rngs)
    assert [g[0] for g in groups] == [[0], [1], [2]]
    assert isinstance(groups[1][1], torch.cuda.OutOfMemoryError)
    for i in (0, 2):  # the same draws as without the failed batch: one seed, one result
        torch.testing.assert_close(groups[i][1][0], clean[0][1][i])
    other = retry_alone_on_oom(lambda idx: (_ for _ in ()).throw(ValueError("bad")), 2, rngs[:2])
    assert len(other) == 1 and isinstance(other[0][1], ValueError)  # not an OOM: no retry


def test_soak_bench_counts_failures_memory_leaked_slots_and_shutdown(tiny_ckpt, tmp_path):
    from cadence.bench.soak import run_soak
    res = run_soak(str(tiny_ckpt), "cpu", clients=2, seconds=6, max_tokens=20, storm=3,
                   out_json=str(tmp_path / "soak.json"))
    assert res["requests"] >= 2 and res["failed"] == 0 and len(res["memory"]) >= 2
    assert res["after_storm"]["running"] == 0 and res["after_storm"]["waiting"] == 0
    assert res["served_after_storm"] and res["shutdown_s"] is not None and res["shutdown_s"] < 60
    assert (tmp_path / "soak.json").is_file()


def test_host_memory_is_trimmed_at_most_once_per_interval():
    import sys
    from cadence.engine.host_memory import HostTrimmer
    t = HostTrimmer(interval_s=60)
    if not sys.platform.startswith("linux"):
        assert t.maybe_trim() is False
        return
    assert t.maybe_trim() is True and t.maybe_trim() is False and t.trims == 1
