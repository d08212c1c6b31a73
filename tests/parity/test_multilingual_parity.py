"""Cadence vs chatterbox-tts==0.1.7's `ChatterboxMultilingualTTS` on one full-size random multilingual checkpoint
(ve.pt and s3gen.pt pickles, t3_mtl23ls_v2.safetensors, the grapheme tokenizer, Cangjie5_TC.json) made by
Cadence's maker and loaded by the reference's own `from_local`, fp32 on the CPU.

Checked: text tokens per language (every language whose front-end runs here: the 18 that need no package, ko
(Cadence's own Jamo step), ja (pykakasi), zh (Cangjie codes; spacy-pkuseg's segmentation model downloads on
first use, which this machine cannot, so both sides get the same stand-in segmenter that keeps the text whole);
T3 logits under teacher forcing <= 1e-4 relative; the end-of-speech rules inside the decode (suppress / force / none
at every teacher-forced step, read from the real model's attention, and the guided logits); voice conditioning;
the S3Gen mel from the pickled weights."""

import contextlib
import os
import sys
import types

import pytest
import torch

from cadence.engine.rng import RequestRNG
from cadence.sampling_params import SamplingParams
from tests.conftest import rel_err

pytestmark = pytest.mark.parity
N_STEPS = int(os.environ.get("CADENCE_PARITY_T3_STEPS", "6"))

SENTENCES = {
    "ar": "مرحبا بالعالم، كيف حالك؟", "da": "Hej verden, hvordan går det?", "de": "Grüße aus Köln, schön!",
    "el": "Καλημέρα κόσμε, τι κάνεις;", "en": "Hello there... how are you?", "es": "¿Dónde está la estación?",
    "fi": "Hyvää huomenta, mitä kuuluu?", "fr": "Bonjour à tous, ça va très bien!", "hi": "नमस्ते दुनिया, आप कैसे हैं?",
    "it": "Buongiorno, come stai?", "ms": "Selamat pagi, apa khabar?", "nl": "Goedemorgen, hoe gaat het?",
    "no": "God morgen, hvordan går det?", "pl": "Zażółć gęślą jaźń.", "pt": "Olá, tudo bem com você?",
    "sv": "God morgon, hur mår du?", "sw": "Habari ya asubuhi, rafiki.", "tr": "Günaydın, nasılsın?",
    "ko": "안녕하세요, 반갑습니다.", "ja": "今日は良い天気ですね。カタカナも。", "zh": "你好，世界。一二三丁七",
}
TEXT, LANGUAGE = SENTENCES["fr"], "fr"


@pytest.fixture(scope="module")
def mtl_ckpt(tmp_path_factory):
    from cadence.random_checkpoint import make_random_multilingual_checkpoint
    keep = os.environ.get("CADENCE_PARITY_MTL_CKPT")
    if keep and os.path.isfile(os.path.join(keep, "s3gen.pt")):
        return keep
    return make_random_multilingual_checkpoint(keep or tmp_path_factory.mktemp("mtl"), seed=3, with_conds=False)


@pytest.fixture(scope="module")
def segmenter_stand_in():
    """spacy-pkuseg as both sides would find it if its model could be had: a segmenter that keeps text whole."""
    real = sys.modules.get("spacy_pkuseg")
    sys.modules["spacy_pkuseg"] = types.SimpleNamespace(pkuseg=lambda: types.SimpleNamespace(cut=lambda t: [t]))
    yield
    if real is None:
        sys.modules.pop("spacy_pkuseg", None)
    else:
        sys.modules["spacy_pkuseg"] = real


@pytest.fixture(scope="module")
def reference(mtl_ckpt, ref_wav_path, segmenter_stand_in):
    if not hasattr(torch.backends.cuda, "sdp_kernel"):
        torch.backends.cuda.sdp_kernel = lambda **_: contextlib.nullcontext()
    import chatterbox.models.tokenizers.tokenizer as tokenizer_module
    # The reference fetches Cangjie5_TC.json through the hub into the checkpoint directory; it is there already.
    tokenizer_module.hf_hub_download = lambda repo_id, filename, cache_dir=None, **_: os.path.join(cache_dir, filename)
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS
    model = ChatterboxMultilingualTTS.from_local(mtl_ckpt, "cpu")
    model.prepare_conditionals(str(ref_wav_path), exaggeration=0.5)
    return model


@pytest.fixture(scope="module")
def ours(mtl_ckpt):
    from cadence.tts import TTS
    return TTS.from_dir(mtl_ckpt, device="cpu", watermark=False, memory_plan="fp32", enforce_eager=True)


@pytest.fixture(scope="module")
def our_voice(ours, ref_wav_path):
    return ours.prepare_voice(str(ref_wav_path), exaggeration=0.5)


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_text_tokens_in_every_language(reference, ours, language):
    from chatterbox.mtl_tts import punc_norm
    text = SENTENCES[language]
    assert ours.family.normalize(text) == punc_norm(text)
    expected = reference.tokenizer.text_to_tokens(punc_norm(text), language_id=language)[0].tolist()
    assert ours.text_ids(text, language) == expected


def test_voice_conditioning(reference, our_voice):
    c = reference.conds
    assert torch.equal(our_voice.t3_prompt_tokens, c.t3.cond_prompt_speech_tokens.cpu())
    assert torch.equal(our_voice.prompt_tokens, c.gen["prompt_token"].cpu())
    assert rel_err(our_voice.speaker_emb, c.t3.speaker_emb.cpu()) <= 1e-5
    assert rel_err(our_voice.prompt_feat, c.gen["prompt_feat"].cpu()) <= 1e-5


def _reference_teacher_forced_logits(reference, forced, params, guided=None):
    """The reference's own T3.inference (its alignment analyzer included) with torch.multinomial replaced by the
    forced tokens: the raw speech logits of every step (and in `guided`, what its analyzer handed back)."""
    from chatterbox.models.t3.inference.alignment_stream_analyzer import AlignmentStreamAnalyzer
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.mtl_tts import punc_norm
    t3, logits, step = reference.t3, [], iter(forced)
    analyzer_step = AlignmentStreamAnalyzer.step

    def recorded_step(self, *args, **kwargs):
        out = analyzer_step(self, *args, **kwargs)
        if guided is not None:
            guided.append(out.detach().cpu().clone())
        return out
    AlignmentStreamAnalyzer.step = recorded_step
    hook = t3.speech_head.register_forward_hook(lambda m, i, o: logits.append(o[:, -1].detach().cpu().clone()))
    real = torch.multinomial
    tokens = reference.tokenizer.text_to_tokens(punc_norm(TEXT), language_id=LANGUAGE)
    tokens = torch.nn.functional.pad(torch.cat([tokens, tokens]), (1, 0), value=255)
    tokens = torch.nn.functional.pad(tokens, (0, 1), value=0)
    c = reference.conds.t3
    torch.multinomial = lambda p, num_samples=1, **_: torch.tensor([[next(step)]])
    try:
        t3.inference(t3_cond=T3Cond(speaker_emb=c.speaker_emb, cond_prompt_speech_tokens=c.cond_prompt_speech_tokens,
                                    emotion_adv=c.emotion_adv), text_tokens=tokens, max_new_tokens=len(forced),
                     temperature=params.temperature, cfg_weight=params.cfg_weight,
                     repetition_penalty=params.repetition_penalty, min_p=params.min_p, top_p=params.top_p)
    finally:
        torch.multinomial = real
        AlignmentStreamAnalyzer.step = analyzer_step
        hook.remove()
    return logits


def test_t3_logits_under_teacher_forcing(reference, ours, our_voice):
    params = ours.params(seed=0, language=LANGUAGE)
    assert params.repetition_penalty == 2.0  # the reference's multilingual default
    forced = torch.randint(0, 6561, (N_STEPS,), generator=torch.Generator().manual_seed(9)).tolist()
    ref_logits = _reference_teacher_forced_logits(reference, forced, params)
    out = ours.t3_runner.generate(ours.prefill(TEXT, our_voice, params), params, 0, forced_tokens=forced,
                                  keep_logits=True)
    errs = [rel_err(o, r) for o, r in zip(out.logits, ref_logits[:N_STEPS])]
    assert len(errs) == N_STEPS and max(errs) <= 1e-4, errs


def _decisions(guided: list[torch.Tensor]) -> str:
    """Per step: F (EOS forced), S (EOS suppressed) or . (neither), read from the guided logits."""
    eos = 6562
    return "".join("F" if g[0, eos] == 2 ** 15 and g.amax() == 2 ** 15 and (g == -2 ** 15).sum() == g.numel() - 1
                   else "S" if g[0, eos] == -2 ** 15 else "." for g in guided)


def test_end_of_speech_rules_inside_the_decode(reference, ours, our_voice):
    """The rules read the real model's attention (Cadence: the tapped queries and the KV cache; the reference: its
    eager attention maps through hooks): the same decision at every teacher-forced step and the same guided logits.
    Steps 4 and 5 are fed the same token, so step 6 must force EOS (a repeated speech token)."""
    params = ours.params(seed=0, language=LANGUAGE)
    forced = torch.randint(0, 6561, (8,), generator=torch.Generator().manual_seed(11)).tolist()
    forced[5] = forced[4]
    ref_guided: list[torch.Tensor] = []
    _reference_teacher_forced_logits(reference, forced, params, ref_guided)
    out = ours.t3_runner.generate(ours.prefill(TEXT, our_voice, params), params, 0, forced_tokens=forced,
                                  keep_logits=True)
    assert _decisions(out.guided) == _decisions(ref_guided[:8])
    assert "S" in _decisions(out.guided) and _decisions(out.guided)[6] == "F"
    for ours_g, ref_g in zip(out.guided, ref_guided):
        keep = ref_g.abs() < 2 ** 15  # the entries the rules did not set
        assert torch.equal(keep, ours_g.abs() < 2 ** 15) and rel_err(ours_g[keep], ref_g[keep]) <= 1e-4
    off = ours.params(seed=0, language=LANGUAGE, alignment_stop=False)
    plain = ours.t3_runner.generate(ours.prefill(TEXT, our_voice, off), off, 0, forced_tokens=forced, keep_logits=True)
    assert set(_decisions(plain.guided)) == {"."}


def test_s3gen_mel_from_the_pickled_weights(reference, ours, our_voice):
    tokens = torch.randint(0, 6561, (20,), generator=torch.Generator().manual_seed(4))
    torch.manual_seed(5)
    ref_mel = reference.s3gen.flow_inference(tokens, ref_dict=reference.conds.gen, finalize=True)
    our_mel = ours.audio_runner.mel(tokens, our_voice, RequestRNG(5, "cpu"))
    assert our_mel.shape == ref_mel.shape and rel_err(our_mel, ref_mel) <= 1e-4
