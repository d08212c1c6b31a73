"""Speaking rate: the mel stretched in time before the vocoder, the same whether a stream stretches it window by
window or a one-piece render all at once; lengths scale by 1/speed; bad values refused everywhere."""

import numpy as np
import pytest
import torch

from cadence.audio.speed import check_speed, stretch_mel, stretched_count


@pytest.mark.parametrize("speed", [0.25, 0.7, 1.5, 2.0, 4.0])
def test_incremental_stretch_equals_one_piece(speed):
    mel = torch.randn(1, 80, 157, generator=torch.Generator().manual_seed(0))
    whole = stretch_mel(mel, speed)
    assert whole.shape[-1] == round(157 / speed)
    parts, have = [], 0
    for n in (3, 40, 41, 100, 157):  # the source grows as windows come; the last is final
        want = stretched_count(n, speed, final=n == 157)
        parts.append(stretch_mel(mel[..., :n], speed, have, want))
        have = want
    assert torch.allclose(torch.cat(parts, dim=-1), whole, atol=1e-6)


def test_integral_speeds_pick_source_frames():
    mel = torch.arange(20.0).view(1, 1, 20)
    assert stretch_mel(mel, 2.0).flatten().tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert stretch_mel(mel, 0.5)[..., :4].flatten().tolist() == [0, 0.5, 1, 1.5]


@pytest.mark.parametrize("bad", [0.2, 4.5, float("nan"), "2", True])
def test_bad_speeds_are_refused(bad):
    with pytest.raises(ValueError, match="speed must be a number in"):
        check_speed(bad)


def test_speed_scales_one_piece_and_streamed_audio_alike(tiny_tts):
    base = tiny_tts.generate("Hello there, friend.", seed=4, max_new_tokens=60)
    fast = tiny_tts.generate("Hello there, friend.", seed=4, max_new_tokens=60, speed=2.0)
    assert fast.tokens == base.tokens
    frames = base.samples.size // 480  # mel frames of the render at speed 1
    assert fast.samples.size == stretched_count(frames, 2.0, True) * 480
    chunks = list(tiny_tts.stream("Hello there, friend.", seed=4, max_new_tokens=60, speed=0.5))
    whole = tiny_tts.generate_many(["Hello there, friend."], seed=4, max_new_tokens=60, speed=0.5)[0]
    assert chunks[-1].tokens == whole.tokens
    assert sum(c.samples.size for c in chunks) == whole.samples.size
    assert np.isfinite(np.concatenate([c.samples for c in chunks])).all()


def test_speed_over_http(tmp_path_factory, tiny_ckpt):
    import httpx

    from tests.unit.test_server import serve_in_thread
    gen = serve_in_thread(tiny_ckpt, {}, library=str(tmp_path_factory.mktemp("voices")))
    base = next(gen)
    try:
        body = {"input": "Hello there.", "max_new_tokens": 40, "seed": 1, "response_format": "pcm"}
        normal = httpx.post(base + "/v1/audio/speech", json=body, timeout=60)
        slow = httpx.post(base + "/v1/audio/speech", json=dict(body, speed=0.5), timeout=60)
        assert normal.status_code == slow.status_code == 200
        assert abs(len(slow.content) / len(normal.content) - 2.0) < 0.05
        bad = httpx.post(base + "/v1/audio/speech", json=dict(body, speed=8), timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "speed"
    finally:
        next(gen, None)


def test_the_speed_bench_measures_pitch_kept_and_resampling_moved():
    """`cadence bench --speeds`' quality half, on its test signal of known pitch: the mel stretch keeps the
    pitch (well within a semitone) and the length (source / speed, within 1%); resampling, beside it, moves
    the pitch by an octave at 0.5x and 2x. A stretch that resampled would fail the first check."""
    pytest.importorskip("librosa")
    from cadence.bench.speed import pitch_and_length
    rows = {r["speed"]: r for r in pitch_and_length((0.5, 2.0), seconds=3.0, n_iter=16)}
    for speed, r in rows.items():
        assert abs(r["pitch_cents"]) < 100, r
        assert abs(r["length_ratio"] - 1) < 0.01, r
        assert abs(abs(r["resampled_pitch_cents"]) - 1200) < 60, r
