"""True streaming on the tiny model: chunks while T3 decodes, sample-continuous joins, same tokens and
length as the one-piece result, early close cancels."""

import time

import numpy as np
import pytest

TEXT = "Hello there, this is a streaming test of a reasonable length."


@pytest.fixture(scope="module")
def streamed(tiny_tts):
    chunks = list(tiny_tts.stream(TEXT, seed=3, max_new_tokens=200))
    return chunks, tiny_tts.generate(TEXT, seed=3, max_new_tokens=200)


def test_stream_yields_a_small_first_chunk_then_larger_ones(streamed):
    chunks, _ = streamed
    assert len(chunks) >= 2 and chunks[-1].final and not any(c.final for c in chunks[:-1])
    assert [c.index for c in chunks] == list(range(len(chunks)))
    # 16 tokens minus the 3-token lookahead and the 8 held-back frames: well under 0.5 s; windows that pile
    # up while the audio worker is busy merge, so later chunks only grow.
    sizes = [c.samples.size for c in chunks]
    assert 0 < sizes[0] <= 12000 and sizes[0] <= min(sizes[1:-1] or [sizes[0]])
    assert chunks[-1].timings["first_audio"] < chunks[-1].timings["total"]


def test_stream_has_the_same_tokens_and_length_as_one_piece(streamed):
    chunks, whole = streamed
    assert chunks[-1].tokens == whole.tokens
    assert sum(c.samples.size for c in chunks) == whole.samples.size


def _flux(wav, n_fft=512, hop=128):
    frames = np.lib.stride_tricks.sliding_window_view(wav, n_fft)[::hop] * np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(frames, axis=-1))
    return np.sqrt((np.diff(mag, axis=0).clip(min=0) ** 2).sum(-1)), hop


def test_chunk_joins_are_continuous(streamed):
    chunks, _ = streamed
    wav = np.concatenate([c.samples for c in chunks])
    joins = np.cumsum([c.samples.size for c in chunks[:-1]])
    assert _join_ok(wav, joins)
    step = np.abs(np.diff(wav))
    assert max(step[j - 1] for j in joins) <= np.percentile(step, 99.9)


def _join_ok(wav, joins) -> bool:
    flux, hop = _flux(wav)
    at_join = np.array([flux[max(0, j // hop - 4): j // hop + 1].max() for j in joins])
    inside = np.delete(flux, np.concatenate([np.arange(max(0, j // hop - 6), j // hop + 3) for j in joins]))
    return bool(at_join.max() <= np.percentile(inside, 99.5))


def test_the_join_check_catches_a_click():
    # A 220 Hz tone cut into windows: restarting the phase at each cut (a hard join) is flagged, the
    # continuous tone is not. Guards the check above against passing vacuously.
    sr, t = 24000, np.arange(24000 * 3) / 24000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    joins = [9000, 21000, 40000, 60000]
    pieces = np.split(t, joins)
    clicked = np.concatenate([0.3 * np.sin(2 * np.pi * 220 * (p - p[0]) + 1.3) for p in pieces])
    assert _join_ok(tone, joins) and not _join_ok(clicked, joins)


def test_closing_a_stream_early_cancels_the_request(tiny_tts):
    before = tiny_tts.engine.stats.cancelled
    it = tiny_tts.stream(TEXT, seed=4, max_new_tokens=400)
    first = next(it)
    assert first.index == 0 and not first.final
    it.close()
    deadline = time.time() + 10
    while tiny_tts.engine.load["running"] and time.time() < deadline:
        time.sleep(0.05)
    assert tiny_tts.engine.stats.cancelled == before + 1 and tiny_tts.engine.load["running"] == 0


def test_stream_bench_measures_ttfa_underruns_and_long_text(tiny_tts):
    from cadence.bench.stream import long_text, markdown, stream_level
    level = stream_level(tiny_tts, tiny_tts.default_voice, 2, 120, seed=1)
    assert level["streams"] == 2 and 0 < level["ttfa_p50_s"] <= level["ttfa_max_s"]
    assert level["chunks_per_stream"] >= 1 and level["underruns"] >= 0
    lt = long_text(tiny_tts, tiny_tts.default_voice, 120, seed=2)
    assert lt["every_word_once_in_order"] and lt["max_chunk_tokens"] <= lt["budget_tokens"]
    assert lt["audio_s"] > 0
    md = markdown({"device": "cpu", "plan": "fp32", "stream_tokens": 120, "streams": [level], "long_text": lt})
    assert "Long text: 120 words" in md


def test_streams_rendered_together_equal_each_stream_alone(tiny_tts):
    import threading
    texts = [TEXT, "A second voice joins the same batch of windows."]
    alone = [list(tiny_tts.stream(t, seed=20 + i, max_new_tokens=120)) for i, t in enumerate(texts)]
    together: list = [None, None]
    handles = [tiny_tts.stream(t, seed=20 + i, max_new_tokens=120) for i, t in enumerate(texts)]

    def consume(i):
        together[i] = list(handles[i])

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for a, b in zip(alone, together):
        assert a[-1].tokens == b[-1].tokens
        wa, wb = np.concatenate([c.samples for c in a]), np.concatenate([c.samples for c in b])
        assert wa.shape == wb.shape and np.abs(wa - wb).max() < 1e-3
