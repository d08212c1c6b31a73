"""Backpressure and timeouts of the server, on a deliberately small engine: one KV slot, a queue of one,
a short request timeout."""

import threading
import time

import httpx
import pytest

from cadence.bench.serve import wait_idle
from tests.unit.test_server import serve_in_thread


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
    quick = httpx.post(small_server + "/v1/audio/speech", json={"input": "Hi.", "max_new_tokens": 10, "seed": 4,
                                                                 "response_format": "pcm"}, timeout=60)
    assert quick.status_code == 200 and len(quick.content) > 0
    metrics = httpx.get(small_server + "/metrics").text
    assert 'cadence_requests_total{status="rejected"} 1.0' in metrics
    assert 'cadence_requests_total{status="timeout"}' in metrics
