"""The server's encoder processes: the same bytes as in-process encoding, one response per stream state, a worker
lost before a response's first samples costs nothing and one lost mid-response fails that response alone; and a
real server whose mp3 responses go through them."""

import os
import signal
import time

import httpx
import numpy as np
import pytest

from cadence.audio.encode import StreamEncoder, format_unavailable
from cadence.server.encode_pool import EncodePool, PooledEncoder

pytestmark = pytest.mark.skipif(bool(format_unavailable("mp3")), reason="PyAV is not installed")

SR = 24000


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _local(fmt: str, pieces: list[np.ndarray]) -> bytes:
    enc = StreamEncoder(fmt, SR)
    return b"".join(enc.write(p) for p in pieces[:-1]) + enc.finish(pieces[-1])


def _pooled(enc, pieces: list[np.ndarray]) -> bytes:
    return b"".join(enc.write(p) for p in pieces[:-1]) + enc.finish(pieces[-1])


def _same(a: bytes, b: bytes, fmt: str) -> bool:
    """Equal bytes; Ogg (opus) numbers each stream with a random serial, so there the decoded audio."""
    if fmt != "opus":
        return a == b
    from tests.unit.test_server import _decode
    return np.array_equal(_decode(a, fmt)[0], _decode(b, fmt)[0]) and len(a) == len(b)


@pytest.fixture(scope="module")
def pool():
    p = EncodePool(2)
    p.start("cuda")  # as beside a GPU engine; the workers themselves never touch CUDA
    assert all(w.wait_ready(60) for w in p.workers)
    yield p
    p.close()


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac"])
def test_a_worker_encodes_the_same_bytes_as_this_process(pool, fmt):
    pieces = [_clip(0.7, 1), _clip(0.3, 2), _clip(1.1, 3)]
    enc = pool.encoder(fmt, SR)
    assert isinstance(enc, PooledEncoder)
    assert _same(_pooled(enc, pieces), _local(fmt, pieces), fmt)
    assert enc.worker is not None and enc._local is None  # encoded in the worker
    one = pool.encoder(fmt, SR)
    assert _same(one.finish(pieces[0]), _local(fmt, pieces[:1]), fmt)  # one piece: a single call


def test_interleaved_responses_keep_their_own_state(pool):
    a, b = [_clip(0.5, 4), _clip(0.5, 5)], [_clip(0.4, 6), _clip(0.6, 7)]
    ea, eb = pool.encoder("mp3", SR), pool.encoder("mp3", SR)
    out_a, out_b = ea.write(a[0]), eb.write(b[0])
    out_a += ea.finish(a[1])
    out_b += eb.finish(b[1])
    assert out_a == _local("mp3", a) and out_b == _local("mp3", b)


def test_a_response_that_ends_early_frees_its_state_in_the_worker():
    p = EncodePool(1)
    p.start("cuda")
    try:
        assert p.workers[0].wait_ready(60)
        kept, dropped = p.encoder("mp3", SR), p.encoder("mp3", SR)
        kept.write(_clip(0.3, 1))
        dropped.write(_clip(0.3, 2))
        assert dropped.discard() == 1  # only `kept` is still held
        assert dropped.discard() is None and kept.finish(_clip(0.3, 3))
        assert p.encoder("mp3", SR).discard() is None  # nothing sent, nothing to free
    finally:
        p.close()


def test_wav_and_pcm_stay_in_this_process(pool):
    assert not isinstance(pool.encoder("pcm", SR), PooledEncoder)
    assert not isinstance(pool.encoder("wav", SR), PooledEncoder)


def test_no_workers_beside_a_cpu_engine_unless_forced():
    p = EncodePool(2)
    p.start("cpu")
    assert p.workers == [] and not isinstance(p.encoder("mp3", SR), PooledEncoder)


def test_a_lost_worker_fails_only_the_response_it_held_and_is_replaced():
    p = EncodePool(1)
    p.start("cuda")
    try:
        (w,) = p.workers
        assert w.wait_ready(60)
        midway = p.encoder("mp3", SR)
        midway.write(_clip(0.5, 1))
        os.kill(w.pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(RuntimeError, match="mp3 encoding failed"):
            midway.finish(_clip(0.5, 2))
        fresh = p.encoder("mp3", SR)  # while the replacement starts: encoded in this process, nothing lost
        assert fresh.finish(_clip(0.5, 3)) == _local("mp3", [_clip(0.5, 3)])
        assert w.restarts == 1 and w.wait_ready(60)
        later = p.encoder("mp3", SR)
        assert later.finish(_clip(0.5, 3)) == _local("mp3", [_clip(0.5, 3)]) and later._local is None
    finally:
        p.close()


def test_a_server_encodes_mp3_in_its_worker_processes(tiny_ckpt, monkeypatch):
    from tests.unit.test_server import _decode, serve_in_thread
    monkeypatch.setattr(EncodePool, "processes", True)
    calls = []
    real = PooledEncoder._request
    monkeypatch.setattr(PooledEncoder, "_request", lambda self, op, s: (calls.append(op), real(self, op, s))[1])
    gen = serve_in_thread(tiny_ckpt, {})
    base = next(gen)
    try:
        for _ in range(100):  # the workers start after the model is loaded; wait until they take work
            r = httpx.post(base + "/v1/audio/speech", json={"input": "Encoded elsewhere.", "response_format": "mp3",
                                                             "seed": 1, "max_new_tokens": 20})
            assert r.status_code == 200
            if calls:
                break
            time.sleep(0.1)
        assert calls, "no response went through an encoder process"
        audio, rate = _decode(r.content, "mp3")
        assert rate == SR and audio.size > 0
    finally:
        next(gen, None)
