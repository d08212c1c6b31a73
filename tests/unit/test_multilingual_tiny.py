"""The multilingual family on a tiny random checkpoint of its layout (CPU): loading the pickled files safely, the
text front-ends, `language` end to end (library, engine with mixed languages, CLI, HTTP)."""

import subprocess
import sys

import httpx
import pytest
import torch

from cadence.text.multilingual import LANGUAGES, hangul_to_jamo


@pytest.fixture(scope="module")
def mtl_ckpt(tmp_path_factory):
    from cadence.random_checkpoint import make_random_multilingual_checkpoint
    return make_random_multilingual_checkpoint(tmp_path_factory.mktemp("mtl_tiny"), seed=1, tiny=True)


@pytest.fixture(scope="module")
def mtl(mtl_ckpt):
    from cadence.tts import TTS
    return TTS.from_dir(mtl_ckpt, device="cpu", watermark=False, memory_plan="fp32")  # batch-invariant: the parity path


def test_the_checkpoint_has_the_official_files_and_is_detected(mtl_ckpt, mtl):
    names = sorted(p.name for p in mtl_ckpt.iterdir())
    assert names == ["Cangjie5_TC.json", "conds.pt", "grapheme_mtl_merged_expanded_v1.json", "s3gen.pt",
                     "t3_mtl23ls_v2.safetensors", "ve.pt"]
    assert mtl.family.name == "multilingual" and mtl.t3.cfg.text_vocab == 2454
    assert mtl.tokenizer.tokenizer.get_vocab_size() == 2454
    assert mtl.params().repetition_penalty == 2.0


def test_pickled_weights_are_read_as_tensors_only(mtl_ckpt, tmp_path):
    """ve.pt / s3gen.pt load with weights_only: a pickle that would run code is refused, by name."""
    import shutil

    from cadence.checkpoint import CheckpointError
    from cadence.tts import TTS
    bad = tmp_path / "ck"
    shutil.copytree(mtl_ckpt, bad)
    import datetime  # a pickle that names a class outside the tensor allowlist: weights_only refuses to build it
    torch.save({"lstm.weight_ih_l0": datetime.date(2020, 1, 1)}, bad / "ve.pt")
    with pytest.raises(CheckpointError, match="ve.pt: not a readable state dict"):
        TTS.from_dir(bad, device="cpu", watermark=False)
    torch.save({"not.a.key": torch.zeros(1)}, bad / "ve.pt")
    with pytest.raises(CheckpointError, match="ve.pt: keys do not match"):
        TTS.from_dir(bad, device="cpu", watermark=False)


def test_hangul_is_split_into_jamo():
    assert hangul_to_jamo("한국어") == "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165"
    assert hangul_to_jamo(" abc ") == "abc"


def test_language_is_a_knob_with_clear_refusals(mtl, tiny_tts):
    audio = mtl.generate("Bonjour tout le monde.", language="fr", seed=1, max_new_tokens=10)
    assert audio.samples.size > 0
    ids = mtl.text_ids("Bonjour.", "FR")
    assert ids[0] == mtl.tokenizer.tokenizer.token_to_id("[fr]")
    with pytest.raises(ValueError, match="no language: the multilingual model speaks ar, da"):
        mtl.generate("Bonjour.", seed=1, max_new_tokens=5)
    with pytest.raises(ValueError, match="language 'xx'"):
        mtl.generate("Bonjour.", language="xx", max_new_tokens=5)
    with pytest.raises(ValueError, match="speaks English only"):
        tiny_tts.generate("Hello.", language="fr", max_new_tokens=5)
    assert tiny_tts.text_ids("Hello.", "en") == tiny_tts.text_ids("Hello.")


def test_a_missing_front_end_names_its_package(mtl, monkeypatch):
    monkeypatch.setitem(sys.modules, "dicta_onnx", None)  # import fails as if not installed
    mtl.tokenizer._steps.pop("he", None)
    with pytest.raises(ValueError, match=r"Hebrew \(he\) text needs the package dicta-onnx: pip install"):
        mtl.text_ids("שלום", "he")
    with pytest.raises(ValueError, match="russian-text-stresser"):
        mtl.text_ids("Привет", "ru")


def test_one_batch_holds_several_languages(mtl):
    texts, langs = ["Bonjour.", "Guten Tag.", "Hola.", "Hello."], ["fr", "de", "es", "en"]
    batched = mtl.generate_many(texts, language=langs, seed=[1, 2, 3, 4], max_new_tokens=12)
    alone = [mtl.generate(t, language=lang, seed=s, max_new_tokens=12) for t, lang, s in zip(texts, langs, [1, 2, 3, 4])]
    assert [b.tokens for b in batched] == [a.tokens for a in alone]


def test_cli_speaks_a_language_and_refuses_a_wrong_one(mtl_ckpt, tmp_path):
    def say(*args):
        return subprocess.run([sys.executable, "-m", "cadence.cli", "say", "Bonjour tout le monde.", "--model",
                               str(mtl_ckpt), "--device", "cpu", "--max-new-tokens", "10", "--no-watermark", *args],
                              capture_output=True, text=True, timeout=300)
    ok = say("-o", str(tmp_path / "fr.wav"), "--language", "fr", "--seed", "1")
    assert ok.returncode == 0 and (tmp_path / "fr.wav").stat().st_size > 44, ok.stderr
    for args in (("--language", "xx"), ()):
        bad = say("-o", str(tmp_path / "x.wav"), *args)
        lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
        assert bad.returncode == 2 and len(lines) == 1 and ", ".join(LANGUAGES) in lines[0], bad.stderr


def test_server_lists_languages_and_takes_one_per_request(mtl_ckpt, tmp_path):
    from tests.unit.test_server import serve_in_thread
    gen = serve_in_thread(mtl_ckpt, {}, library=str(tmp_path / "voices"))
    base = next(gen)
    try:
        langs = httpx.get(base + "/v1/languages").json()
        assert langs["required"] is True and [d["id"] for d in langs["data"]] == list(LANGUAGES)
        assert httpx.get(base + "/health").json()["languages"] == list(LANGUAGES)
        body = {"model": "chatterbox-multilingual", "input": "Bonjour.", "response_format": "wav",
                "max_new_tokens": 10, "seed": 1, "stream": False}
        r = httpx.post(base + "/v1/audio/speech", json={**body, "language": "fr"}, timeout=120)
        assert r.status_code == 200 and r.content[:4] == b"RIFF"
        for extra in ({}, {"language": "xx"}):
            r = httpx.post(base + "/v1/audio/speech", json={**body, **extra}, timeout=60)
            assert r.status_code == 400 and "the multilingual model speaks" in r.json()["error"]["message"]
        # a voice uploaded with its language: requests with that voice and no language speak it
        import io

        import soundfile as sf

        from cadence.random_checkpoint import synthetic_voice
        buf = io.BytesIO()
        sf.write(buf, synthetic_voice(seconds=3.0), 24000, format="WAV")
        up = httpx.post(base + "/v1/voices", data={"name": "marie", "language": "fr"},
                        files={"file": ("marie.wav", buf.getvalue(), "audio/wav")}, timeout=120)
        assert up.status_code == 201 and up.json()["language"] == "fr", up.text
        bad = httpx.post(base + "/v1/voices", data={"name": "x", "language": "xx"},
                         files={"file": ("x.wav", buf.getvalue(), "audio/wav")}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "language"
        r = httpx.post(base + "/v1/audio/speech", json={**body, "voice": "marie"}, timeout=120)
        assert r.status_code == 200, r.text
    finally:
        next(gen, None)


def test_family_picks_the_model_and_is_checked(mtl_ckpt, tiny_ckpt):
    """`family` chooses among the models of one hub repo; a directory holding another family is refused by name,
    and so is an unknown family, on the library and the server settings alike."""
    from cadence.checkpoint import CheckpointError, resolve
    from cadence.server.settings import ServerSettings
    assert resolve(mtl_ckpt, "multilingual") == mtl_ckpt
    with pytest.raises(CheckpointError, match="is a Chatterbox english checkpoint, not multilingual"):
        resolve(tiny_ckpt, "multilingual")
    assert ServerSettings.from_env(family="multilingual").family == "multilingual"
    with pytest.raises(ValueError, match="unknown model family 'klingon'"):
        ServerSettings(family="klingon")


def test_warm_up_and_the_benches_speak_a_language_every_family_has(mtl):
    """The engine's warm-up bursts and the benches send English text with language "en": the multilingual model
    needs a language, and every family speaks English (a server of this family warmed up with none would fail)."""
    from cadence.bench.serve import level_bodies
    from cadence.engine.warmup import warm_bursts
    warm_bursts(mtl.engine)
    assert {b["language"] for b in level_bodies(3, 1, 50, False, "mp3")} == {"en"}


def test_the_later_t3_file_loads_where_it_is_the_one_there(mtl_ckpt, tmp_path):
    """A directory holding t3_mtl23ls_v3.safetensors (the later multilingual T3, same layout) instead of v2 loads it."""
    import shutil

    from cadence.tts import TTS
    d = tmp_path / "v3"
    shutil.copytree(mtl_ckpt, d)
    (d / "t3_mtl23ls_v2.safetensors").rename(d / "t3_mtl23ls_v3.safetensors")
    tts = TTS.from_dir(d, device="cpu", watermark=False)
    assert tts.family.name == "multilingual" and tts.fingerprint
    assert tts.generate("Hej.", language="sv", seed=1, max_new_tokens=5).samples.size > 0


def test_bench_runs_on_the_family(mtl_ckpt, tmp_path):
    def bench(*args):
        return subprocess.run([sys.executable, "-m", "cadence.cli", "bench", "--model", str(mtl_ckpt), "--device",
                               "cpu", "--repeats", "1", "--short-tokens", "5", "--long-tokens", "8", "--json",
                               str(tmp_path / "b.json"), "--md", str(tmp_path / "b.md"), *args],
                              capture_output=True, text=True, timeout=600)
    ok = bench()  # its long case's text cut to what the tiny T3 holds
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "long: RTF" in (tmp_path / "b.md").read_text()


def test_a_voice_stores_its_language_for_requests_that_name_none(mtl, tiny_tts, tmp_path):
    from cadence.random_checkpoint import synthetic_voice
    lib = mtl.library(tmp_path / "voices")
    voice = lib.add("marie", synthetic_voice(seconds=3.0), sample_rate=24000, language="FR")
    assert voice.language == "fr" and lib.get("marie").language == "fr" and lib.info("marie").language == "fr"
    a = mtl.generate("Bonjour.", voice=lib.get("marie"), seed=2, max_new_tokens=8)
    b = mtl.generate("Bonjour.", voice=lib.get("marie"), seed=2, max_new_tokens=8, language="fr")
    assert a.tokens == b.tokens  # the stored language is the one used
    assert mtl.generate_many(["Bonjour."], voice=lib.get("marie"), seed=2, max_new_tokens=8)[0].tokens == a.tokens
    twin = lib.add("marie2", synthetic_voice(seconds=3.0), sample_rate=24000)  # the same audio, no language given
    assert twin.language is None and lib.get("marie2").language is None
    with pytest.raises(ValueError, match="language 'xx'"):
        lib.add("bad", synthetic_voice(seconds=3.0), sample_rate=24000, language="xx")
    assert "bad" not in lib


def test_end_of_speech_rules_stop_a_repeating_request_alone_and_batched(mtl):
    """Near-greedy sampling without a penalty makes the random model repeat a token: the rules (on by default) force
    EOS right after the repeated pair, in the single-request decoder and the batched engine alike; with
    alignment_stop=False the same requests run on. Mixed settings share one batch."""
    texts, langs, seeds = ["Bonjour tout le monde, comment allez-vous?", "Guten Tag.", "Hola amigos, que tal?"], \
        ["fr", "de", "es"], [1, 2, 3]
    knobs = dict(max_new_tokens=40, temperature=0.05, repetition_penalty=1.0)
    for stop in (None, False):
        alone = [mtl.generate(t, language=lang, seed=s, alignment_stop=stop, **knobs)
                 for t, lang, s in zip(texts, langs, seeds)]
        batched = mtl.generate_many(texts, language=langs, seed=seeds, alignment_stop=stop, **knobs)
        assert [b.tokens for b in batched] == [a.tokens for a in alone]
        if stop is None:
            stopped = alone
    for a, b in zip(stopped, alone):  # each stopped request ends on a repeated pair; without the rules it runs on
        assert a.tokens[-1] == a.tokens[-2] and len(a.tokens) < len(b.tokens)
        assert b.tokens[:len(a.tokens)] == a.tokens
    mixed = mtl.generate_many(texts[:2], language=langs[:2], seed=seeds[:2], alignment_stop=[None, False], **knobs)
    assert mixed[0].tokens == stopped[0].tokens and len(mixed[1].tokens) > len(stopped[1].tokens)


def test_alignment_stop_is_one_knob_and_only_the_multilingual_models(mtl, tiny_tts):
    from cadence.sampling_params import SamplingParams
    assert mtl.params(language="fr").alignment_stop is True
    with pytest.raises(ValueError, match="alignment_stop must be true or false"):
        SamplingParams(alignment_stop="yes")
    with pytest.raises(ValueError, match="alignment_stop: not a knob of Chatterbox english"):
        tiny_tts.params(alignment_stop=False)
    from cadence.cli_parser import build_parser
    args = build_parser().parse_args(["say", "x", "-o", "o.wav", "--no-alignment-stop"])
    assert args.alignment_stop is False
    from cadence.server.schemas import SpeechRequest
    assert SpeechRequest(input="x", alignment_stop=False).knobs()["alignment_stop"] is False
