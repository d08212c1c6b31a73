"""End to end on the tiny configuration: CPU, seconds."""

import numpy as np
import pytest
import torch

from cadence.checkpoint import CheckpointError, load_models
from cadence.engine.t3_runner import clean_speech_tokens
from cadence.voices.voice import Voice


def test_generate_is_reproducible_by_seed(tiny_tts):
    a = tiny_tts.generate("Hello there.", seed=5, max_new_tokens=24)
    b = tiny_tts.generate("Hello there.", seed=5, max_new_tokens=24)
    c = tiny_tts.generate("Hello there.", seed=6, max_new_tokens=24)
    assert a.tokens == b.tokens and np.array_equal(a.samples, b.samples)
    assert a.tokens != c.tokens
    assert a.sample_rate == 24000 and a.samples.dtype == np.float32
    assert np.abs(a.samples).max() <= 0.99 + 1e-6


def test_output_length_follows_tokens(tiny_tts):
    v = tiny_tts.default_voice
    a = tiny_tts.generate("Hello.", seed=1, max_new_tokens=16)
    frames = 2 * (v.prompt_tokens.shape[1] + len(a.tokens)) - v.prompt_feat.shape[1]
    assert a.samples.shape[0] == frames * 480


def test_cfg_off_uses_one_row_and_still_works(tiny_tts):
    a = tiny_tts.generate("Hi.", seed=1, max_new_tokens=8, cfg_weight=0.0)
    assert a.samples.size > 0


def test_unknown_option_and_bad_text_are_value_errors(tiny_tts):
    with pytest.raises(ValueError, match="unknown generation option"):
        tiny_tts.generate("Hi.", temprature=0.5)
    with pytest.raises(ValueError):
        tiny_tts.generate(123)


def test_teacher_forcing_reproduces_sampled_run(tiny_tts):
    params_kw = dict(seed=3, max_new_tokens=12)
    from cadence.sampling_params import SamplingParams
    p = SamplingParams(**params_kw)
    voice = tiny_tts.default_voice
    pre = tiny_tts.prefill("Test.", voice, p)
    run = tiny_tts.t3_runner.generate(pre, p, 3, keep_logits=True)
    forced = tiny_tts.t3_runner.generate(pre, p, 3, forced_tokens=run.tokens,
                                         keep_logits=True)
    for a, b in zip(run.logits, forced.logits):
        assert torch.equal(a, b)


def test_prepare_voice_from_array_and_conds_roundtrip(tiny_tts, tmp_path):
    from cadence.random_checkpoint import synthetic_voice
    wav = synthetic_voice(seconds=3.0, sr=44100, seed=2)
    stereo = np.stack([wav, wav], axis=1)
    v = tiny_tts.prepare_voice(stereo, sample_rate=44100, exaggeration=0.7)
    assert v.prompt_tokens.shape[1] == 75 and v.prompt_feat.shape[1] in (150, 151)
    assert v.speaker_emb.shape == (1, 256) and v.xvector.shape == (1, 192)
    assert v.nbytes < 200_000
    v.save_conds_pt(tmp_path / "conds.pt")
    w = Voice.from_conds_pt(tmp_path / "conds.pt")
    for k, t in v.tensors().items():
        assert torch.equal(t, w.tensors()[k]), k
    assert w.exaggeration == pytest.approx(0.7)


@pytest.mark.parametrize("wav,msg", [(np.zeros(0), "empty"), (np.zeros(48000), "silent"),
                                     (np.full(100, 0.3), "too short"), (np.full(48000, np.nan), "NaN")])
def test_bad_reference_audio(tiny_tts, wav, msg):
    with pytest.raises(ValueError, match=msg):
        tiny_tts.prepare_voice(wav.astype(np.float32), sample_rate=24000)


def test_checkpoint_key_errors_name_the_problem(tiny_ckpt, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    state = load_file(str(bad / "ve.safetensors"))
    state.pop("proj.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(bad / "ve.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="1 missing .*proj.bias.*1 unexpected .*extra.weight"):
        load_models(bad)
    (bad / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="missing tokenizer.json"):
        load_models.__globals__["resolve"](bad)


def test_clean_speech_tokens():
    assert clean_speech_tokens([1, 6561, 2, 7000, 3, 6562, 4]) == [2, 3]
    assert clean_speech_tokens([6562]) == []


@pytest.mark.parametrize("ext,kw", [("flac", {}), ("ogg", {"subtype": "VORBIS"}), ("mp3", {"format": "MP3"}),
                                    ("wav", {"subtype": "PCM_24"})])
def test_reference_audio_formats_rates_and_channels(tiny_tts, tmp_path, ext, kw):
    import soundfile as sf
    from cadence.random_checkpoint import synthetic_voice
    wav = synthetic_voice(seconds=3.0, sr=44100, seed=1)
    path = tmp_path / f"ref.{ext}"
    sf.write(str(path), np.stack([wav, wav], axis=1), 44100, **kw)  # stereo, 44.1 kHz
    v = tiny_tts.prepare_voice(str(path))
    assert v.prompt_tokens.shape[1] == 75 and torch.isfinite(v.xvector).all()


def test_m4a_and_aac_references_are_read_through_pyav(tiny_tts, tmp_path):
    """An AAC recording in an MP4 container (.m4a, as phones record) and a bare ADTS .aac stream prepare a voice."""
    av = pytest.importorskip("av")
    import numpy as np

    from cadence.audio.encode import encode_all
    from cadence.random_checkpoint import synthetic_voice
    wav = synthetic_voice(seconds=3.0)
    (tmp_path / "ref.aac").write_bytes(encode_all(wav, "aac", 24000))
    with av.open(str(tmp_path / "ref.m4a"), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=24000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(wav[None].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = 24000
        for f in av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=24000).resample(frame):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    for name in ("ref.m4a", "ref.aac"):
        voice = tiny_tts.prepare_voice(str(tmp_path / name))
        assert voice.prompt_tokens.numel() > 0, name
