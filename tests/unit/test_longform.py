"""Long text: the splitter keeps every word once and in order; a file renders, resumes, and joins cleanly."""

import random

import numpy as np
import pytest
import soundfile as sf

from cadence.longform import join_audio, render_file
from cadence.text.split import split_text

TRICKY = ('Dr. Smith met Mr. J. R. R. Tolkien at 3.15 p.m. on Jan. 5th! "Is this real?" she asked. '
          "The value of pi is 3.14159, approximately; e.g. close enough. It costs $4.50 (about €4.20), i.e. cheap.")


def _words(s):
    return s.split()


def test_abbreviations_numbers_and_quotes_stay_whole():
    chunks = split_text(TRICKY, max_tokens=12)
    assert _words(" ".join(chunks)) == _words(TRICKY)
    joined = " | ".join(chunks)
    for keep in ("Dr. Smith", "J. R. R. Tolkien", "3.15 p.m. on Jan. 5th!", "3.14159", "$4.50", '"Is this real?"'):
        assert keep in joined.replace(" | ", " ") and all(keep not in c or True for c in chunks)
    assert not any(c.endswith(("Dr.", "Mr.", "J.", "R.", "Jan.", "e.g.")) for c in chunks[:-1])


@pytest.mark.parametrize("seed", range(20))
def test_every_word_appears_exactly_once_in_order_within_budget(seed):
    rnd = random.Random(seed)
    vocab = ["alpha", "beta,", "gamma.", "Dr.", "3.5", '"quote"', "end!", "why?", "semi;", "long" * 30, "e.g.", "x"]
    text = " ".join(rnd.choice(vocab) for _ in range(rnd.randint(1, 400)))
    budget = rnd.randint(3, 40)
    chunks = split_text(text, max_tokens=budget)
    assert _words(" ".join(chunks)) == _words(text)
    assert all(len(c.split()) <= budget for c in chunks)


def test_splitter_rejects_bad_input():
    with pytest.raises(ValueError):
        split_text(None)
    with pytest.raises(ValueError):
        split_text("text", max_tokens=0)
    assert split_text("   ") == []


def test_join_fades_edges_and_inserts_matched_pauses():
    sr = 24000
    a, b = np.ones(2400, np.float32) * 0.5, -np.ones(2400, np.float32) * 0.5
    out = join_audio([a, b], sr, pause_s=0.1, fade_s=0.01)
    assert out.size == 2400 + 2400 + 2400
    assert abs(out[0]) < 1e-6 and abs(out[2399]) < 1e-6 and np.all(out[2400:4800] == 0)
    assert np.abs(np.diff(out)).max() < 0.01  # no step anywhere: faded, not cut


def test_render_file_writes_resumes_and_is_reproducible(tiny_tts, tmp_path, monkeypatch):
    text = " ".join(f"Sentence number {i} is right here." for i in range(6))
    fresh = tmp_path / "fresh.wav"
    info = render_file(tiny_tts, text, fresh, seed=7, max_chunk_tokens=12, progress=False, max_new_tokens=30)
    assert info["chunks"] >= 3 and info["resumed"] == 0
    assert not (tmp_path / "fresh.wav.parts").exists()

    # Interrupt a second render after two chunks are written, then run it again: it resumes.
    out = tmp_path / "book.wav"
    real_submit = tiny_tts.submit
    calls = []

    def failing_submit(request):
        handle = real_submit(request)
        calls.append(handle)
        if len(calls) > 2:
            handle.result = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
        return handle

    monkeypatch.setattr(tiny_tts, "submit", failing_submit)
    with pytest.raises(KeyboardInterrupt):
        render_file(tiny_tts, text, out, seed=7, max_chunk_tokens=12, progress=False, max_new_tokens=30)
    monkeypatch.setattr(tiny_tts, "submit", real_submit)
    for h in calls[2:]:
        h.cancel()
    assert len(list((tmp_path / "book.wav.parts").glob("0*.wav"))) == 2 and not out.exists()
    info = render_file(tiny_tts, text, out, seed=7, max_chunk_tokens=12, progress=False, max_new_tokens=30)
    assert info["resumed"] == 2
    a, sr = sf.read(str(fresh))
    b, _ = sf.read(str(out))
    # Same tokens, same seeds; S3Gen batch groups differ between the runs (fp32 rounding, then 16-bit).
    assert sr == 24000 and a.shape == b.shape and np.abs(a - b).max() < 2e-3


def test_say_file_cli_writes_the_format_of_the_extension(tiny_ckpt, tmp_path):
    import av

    from cadence.cli import main
    src = tmp_path / "book.txt"
    src.write_text("First sentence here. Second one follows! And a third?")
    out = tmp_path / "book.flac"
    assert main(["say", "--file", str(src), "-o", str(out), "--model", str(tiny_ckpt), "--device", "cpu",
                 "--seed", "1", "--max-new-tokens", "20", "--no-watermark"]) == 0
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "flac"
    assert main(["say", "--file", str(src), "-o", str(tmp_path / "book.xyz"), "--model", str(tiny_ckpt)]) == 2
    assert main(["say", "hello", "--file", str(src), "-o", str(out), "--model", str(tiny_ckpt)]) == 2


def test_paragraphs_never_share_a_chunk_and_cut_sentences_stand_alone():
    from cadence.text.split import split_paragraphs
    long_sentence = "He walked down the corridor slowly, " + " ".join(["step"] * 30) + " along with him."
    text = "A short one. " + long_sentence + " The hallway was dark.\n\nNew paragraph here. And more."
    paragraphs = split_paragraphs(text, max_tokens=12)
    assert len(paragraphs) == 2 and paragraphs[1] == ["New paragraph here. And more."]
    first = paragraphs[0]
    # the cut sentence's last piece ends the sentence; the next sentence starts a chunk of its own
    assert any(c.endswith("along with him.") for c in first) and first[-1] == "The hallway was dark."
    assert all(len(c.split()) <= 12 for c in first)


def test_a_word_longer_than_the_budget_is_cut_not_fatal():
    word = "x" * 700
    chunks = split_text(f"Start. {word} end.", count=len, max_tokens=100)
    assert all(len(c) <= 100 for c in chunks) and "".join(chunks).replace(" ", "").count("x") == 700


def test_paragraph_ends_get_a_longer_pause():
    sr = 1000
    waves = [np.ones(100, np.float32)] * 3
    plain = join_audio(waves, sr)
    para = join_audio(waves, sr, paragraph_ends={0})
    assert para.size - plain.size == int(0.6 * sr) - int(0.15 * sr)
