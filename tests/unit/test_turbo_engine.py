"""Turbo on the batched engine (tiny, CPU): one KV row per request, Turbo's sampling order and first-step
history, the silence tail; a request's tokens do not depend on its batch-mates; streaming joins to the whole."""

import numpy as np
import torch
import pytest

from cadence.family import TURBO
from cadence.random_checkpoint import synthetic_voice
from cadence.sampling_params import SamplingParams
from tests.unit.test_streaming import _join_ok

TEXTS = ["Well [laugh] hello there.", "A somewhat longer sentence [sigh] that makes more tokens.", "Short."]


@pytest.fixture(scope="module")
def turbo_tts(tmp_path_factory):
    from cadence.random_checkpoint import make_random_turbo_checkpoint
    from cadence.tts import TTS
    path = make_random_turbo_checkpoint(tmp_path_factory.mktemp("turbo_engine"), seed=2, tiny=True)
    tts = TTS.from_dir(path, device="cpu", watermark=False, memory_plan="fp32")  # batch-invariant: the parity path
    yield tts
    tts.close()


def test_engine_holds_one_row_per_turbo_request(turbo_tts):
    eng = turbo_tts.engine
    assert eng.rows_per_slot == 1 and eng.decoder.k.shape[1] == eng.max_batch
    prompt = turbo_tts.prefill(TEXTS[0], turbo_tts.default_voice, SamplingParams.for_family(TURBO))
    assert prompt.shape[1] <= eng.prefill_len(len(turbo_tts.text_ids(TEXTS[0])))


def test_batched_turbo_requests_equal_alone(turbo_tts):
    voice2 = turbo_tts.prepare_voice(synthetic_voice(seconds=6.0, seed=4), sample_rate=24000)
    knobs = dict(seed=[1, 2, 3], max_new_tokens=[30, 55, 40], temperature=[0.8, 1.0, 0.7], top_k=[1000, 50, 0],
                 top_p=[0.95, 1.0, 0.8], repetition_penalty=[1.2, 2.0, 1.0])
    voices = [None, voice2, None]
    alone = [turbo_tts.generate(t, voice=voices[i], **{k: v[i] for k, v in knobs.items()})
             for i, t in enumerate(TEXTS)]
    many = turbo_tts.generate_many(TEXTS, voice=voices, **knobs)
    for a, b in zip(alone, many):
        assert a.tokens == b.tokens and len(a.tokens) > 0
        assert a.samples.shape == b.samples.shape  # the silence tail included
        assert np.abs(a.samples - b.samples).max() <= 1e-4 * max(1.0, np.abs(a.samples).max())
    assert len(many[0].samples) == (len(many[0].tokens) + TURBO.silence_tokens) * 2 * 480


def test_turbo_engine_refuses_knobs_turbo_lacks(turbo_tts):
    with pytest.raises(ValueError, match="cfg_weight: not a knob of Chatterbox turbo"):
        turbo_tts.generate_many(["Hi."], cfg_weight=0.5)


def test_turbo_stream_is_sample_continuous_and_ends_like_the_whole(turbo_tts):
    chunks = list(turbo_tts.stream(TEXTS[1], seed=3, max_new_tokens=120))
    assert len(chunks) >= 3 and chunks[-1].final
    joined = np.concatenate([c.samples for c in chunks])
    whole = turbo_tts.generate_many([TEXTS[1]], seed=3, max_new_tokens=120)[0]
    assert chunks[-1].tokens == whole.tokens
    # the stream renders the same tokens plus the silence tail, window by window
    assert len(joined) == (len(whole.tokens) + TURBO.silence_tokens) * 2 * 480
    joins = np.cumsum([c.samples.size for c in chunks[:-1]])
    assert _join_ok(joined, joins)
    step = np.abs(np.diff(joined))
    assert max(step[j - 1] for j in joins) <= np.percentile(step, 99.9)


def test_turbo_server_lists_its_ids_and_refuses_the_other_family(tmp_path_factory):
    from openai import NotFoundError, BadRequestError, OpenAI

    from cadence.random_checkpoint import make_random_turbo_checkpoint
    from tests.unit.test_server import serve_in_thread
    ckpt = make_random_turbo_checkpoint(tmp_path_factory.mktemp("turbo_srv"), seed=5, tiny=True)
    gen = serve_in_thread(ckpt, {}, library=str(tmp_path_factory.mktemp("turbo_voices")))
    base = next(gen)
    try:
        client = OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        ids = [m.id for m in client.models.list().data]
        assert "chatterbox-turbo" in ids and "chatterbox" not in ids and "tts-1" in ids
        with pytest.raises(NotFoundError, match="'chatterbox': it is Chatterbox english; this server runs Chatterbox turbo"):
            client.audio.speech.create(model="chatterbox", voice="alloy", input="Hi.")
        with pytest.raises(BadRequestError, match="cfg_weight: not a knob of Chatterbox turbo"):
            client.audio.speech.create(model="chatterbox-turbo", voice="alloy", input="Hi.",
                                       extra_body={"cfg_weight": 0.5})
        audio = client.audio.speech.create(model="chatterbox-turbo", voice="alloy", input="Well [laugh] hi.",
                                           response_format="wav", extra_body={"max_new_tokens": 20, "seed": 1})
        import io

        import soundfile as sf
        wav, sr = sf.read(io.BytesIO(audio.content))
        assert sr == 24000 and wav.size > 0
    finally:
        next(gen, None)


def test_one_recording_serves_both_families(turbo_tts, tiny_tts, tmp_path):
    """A voice added by the English model is prepared for Turbo from its stored audio on first use and kept
    beside the English preparation: each family then reads its own, neither is prepared again."""
    from cadence.voices.library import VoiceError
    root = tmp_path / "shared"
    english = tiny_tts.library(root)
    english.add("narrator", synthetic_voice(seconds=6.0, seed=8), sample_rate=24000)
    first = english.get("narrator")
    turbo = turbo_tts.library(root)
    t = turbo.get("narrator")
    assert t.meta["family"] == "turbo" and t.t3_prompt_tokens.shape[1] > first.t3_prompt_tokens.shape[1]
    assert english.info("narrator").families == ("english", "turbo")
    calls = []
    english.preparer = turbo.preparer = lambda *a: calls.append(a)  # a second preparation would show here
    again = english.get("narrator")
    assert torch.equal(again.speaker_emb, first.speaker_emb) and again.meta["family"] == "english"
    assert torch.equal(turbo.get("narrator").t3_prompt_tokens, t.t3_prompt_tokens) and not calls
    # a voice of the other family handed over directly is refused, naming both
    with pytest.raises(ValueError, match="prepared for Chatterbox english; this model is Chatterbox turbo"):
        turbo_tts.generate("Hi.", voice=first, max_new_tokens=5)
    # a tensors-only voice of the other family cannot be prepared: refused with the reason
    english.add_voice("no_audio", first)
    with pytest.raises(VoiceError, match="prepared for another checkpoint \\(Chatterbox english"):
        turbo.get("no_audio")
