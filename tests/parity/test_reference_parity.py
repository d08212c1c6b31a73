"""Cadence vs chatterbox-tts==0.1.7 on the same full-size random checkpoint, fp32.

Tolerances: T3 logits <= 1e-4 relative at every teacher-forced step; processed sampling
distribution <= 1e-6; voice conditioning equal (tokens exactly); S3Gen mel <= 1e-4 relative for the same
tokens and CFM noise; waveform for the same mel and source noise."""

import json
import os

import pytest
import torch

from cadence.engine.rng import RequestRNG
from cadence.engine.t3_runner import clean_speech_tokens
from cadence.sampling_params import SamplingParams
from tests.conftest import rel_err, snr_db

pytestmark = pytest.mark.parity
TEXT = "Hello there, this is a quick test of the reference model."
N_STEPS = int(os.environ.get("CADENCE_PARITY_T3_STEPS", "6"))
REPORT = os.environ.get("CADENCE_PARITY_REPORT")


def _report(key, value):
    if REPORT:
        data = json.load(open(REPORT)) if os.path.exists(REPORT) else {}
        data[key] = value
        json.dump(data, open(REPORT, "w"), indent=1)


def test_voice_conditioning(reference, our_voice):
    c = reference.conds
    assert torch.equal(our_voice.t3_prompt_tokens, c.t3.cond_prompt_speech_tokens.cpu())
    assert torch.equal(our_voice.prompt_tokens, c.gen["prompt_token"].cpu())
    errs = {"speaker_emb": rel_err(our_voice.speaker_emb, c.t3.speaker_emb.cpu()),
            "prompt_feat": rel_err(our_voice.prompt_feat, c.gen["prompt_feat"].cpu()),
            "xvector": rel_err(our_voice.xvector, c.gen["embedding"].cpu())}
    _report("voice", errs)
    assert max(errs.values()) <= 1e-5, errs


def _reference_teacher_forced(reference, forced, params):
    """Run the reference's own T3.inference with torch.multinomial replaced by the forced tokens; record the
    raw speech logits of every step and the probabilities it sampled from."""
    t3 = reference.t3
    logits, probs = [], []
    hook = t3.speech_head.register_forward_hook(lambda m, i, o: logits.append(o[:, -1].detach().cpu().clone()))
    real_multinomial = torch.multinomial
    step = iter(forced)

    def forced_multinomial(p, num_samples=1, **_):
        probs.append(p.detach().cpu().clone())
        return torch.tensor([[next(step)]], device=p.device)

    tokens = reference.tokenizer.text_to_tokens(__import__("chatterbox.tts", fromlist=["punc_norm"]).punc_norm(TEXT))
    tokens = torch.nn.functional.pad(torch.cat([tokens, tokens]), (1, 0), value=255)
    tokens = torch.nn.functional.pad(tokens, (0, 1), value=0).to(t3.device)
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    c = reference.conds.t3
    cond = T3Cond(speaker_emb=c.speaker_emb, cond_prompt_speech_tokens=c.cond_prompt_speech_tokens,
                  emotion_adv=c.emotion_adv)
    torch.multinomial = forced_multinomial
    try:
        t3.inference(t3_cond=cond, text_tokens=tokens, max_new_tokens=len(forced), temperature=params.temperature,
                     cfg_weight=params.cfg_weight, repetition_penalty=params.repetition_penalty,
                     min_p=params.min_p, top_p=params.top_p)
    finally:
        torch.multinomial = real_multinomial
        hook.remove()
    return logits, probs, tokens


def test_t3_logits_and_sampling_distribution(reference, ours, our_voice):
    params = SamplingParams(temperature=0.8, cfg_weight=0.5, repetition_penalty=1.2, min_p=0.05, top_p=1.0)
    g = torch.Generator().manual_seed(7)
    forced = torch.randint(0, 6561, (N_STEPS,), generator=g).tolist()
    forced[2] = forced[1]  # a repeat, so the repetition penalty acts on a generated token too
    ref_logits, ref_probs, _ = _reference_teacher_forced(reference, forced, params)
    prefill = ours.prefill(TEXT, our_voice, params)
    ours_out = ours.t3_runner.generate(prefill, params, 0,
                                       forced_tokens=forced, keep_logits=True)
    assert len(ours_out.logits) == N_STEPS
    # The reference runs one extra forward after the last token; its logits are never used.
    logit_errs = [rel_err(o, r) for o, r in zip(ours_out.logits, ref_logits[:N_STEPS])]
    _report("t3_logits_rel_err_per_step", logit_errs)
    assert max(logit_errs) <= 1e-4, logit_errs

    # Processed distribution: our sampler on the reference's logits and history vs the reference's probs.
    from cadence.layers.sampling import process_logits
    prob_errs = []
    history = [6561]
    for step, (lg, p_ref) in enumerate(zip(ref_logits, ref_probs)):
        counts = torch.zeros(1, lg.shape[-1], dtype=torch.int32)
        for t in history:
            counts[0, t] += 1
        t = lambda v, dt=torch.float32: torch.tensor([v], dtype=dt)  # noqa: E731
        p = process_logits(lg[:1], lg[1:2], counts, t(params.cfg_weight), t(params.repetition_penalty),
                           t(params.temperature), t(params.min_p), t(params.top_p), t(0, torch.long))
        prob_errs.append(float((p - p_ref).abs().max()))
        history.append(forced[step])
    _report("sampling_probs_max_abs_err", max(prob_errs))
    assert max(prob_errs) <= 1e-6, prob_errs


@pytest.fixture(scope="module")
def speech_tokens():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 6561, (int(os.environ.get("CADENCE_PARITY_S3_TOKENS", "30")),), generator=g)


def test_s3gen_mel_and_waveform(reference, ours, our_voice, speech_tokens):
    dev = ours.device
    torch.manual_seed(11)
    ref_mel = reference.s3gen.flow_inference(speech_tokens.to(dev), ref_dict=reference.conds.gen, finalize=True)
    our_mel = ours.audio_runner.mel(speech_tokens, our_voice, RequestRNG(11, dev))
    mel_err = rel_err(our_mel.cpu(), ref_mel.cpu())
    _report("s3gen_mel_rel_err", mel_err)
    assert our_mel.shape == ref_mel.shape
    assert mel_err <= 1e-4, mel_err

    # Waveform from the same mel and the same source noise (the reference draws it from the global RNG).
    torch.manual_seed(12)
    ref_wav, _ = reference.s3gen.hift_inference(ref_mel)
    our_wav = ours.audio_runner.vocode(ref_mel.float(), RequestRNG(12, dev), fade=False)
    wav_err = rel_err(our_wav.cpu(), ref_wav.cpu())
    _report("hift_wave_rel_err", wav_err)
    _report("hift_wave_snr_db", snr_db(our_wav.cpu().numpy(), ref_wav.cpu().numpy()))
    assert our_wav.shape == ref_wav.shape
    assert wav_err <= 1e-4, wav_err


def _s3gen_end_to_end(reference, ours, voice, speech_tokens, seed: int, key: str):
    """The reference's full S3Gen inference (flow + HiFT + trim fade) vs ours, one seed for both."""
    dev = ours.device
    torch.manual_seed(seed)
    ref_wav, _ = reference.s3gen.inference(speech_tokens.to(dev), ref_dict=reference.conds.gen)
    our_wav = ours.audio_runner.synthesize(speech_tokens, voice, RequestRNG(seed, dev))
    err = rel_err(our_wav.cpu(), ref_wav.cpu())
    _report(key, err)
    assert err <= 1e-3, err
    return our_wav


def test_end_to_end_s3gen_inference(reference, ours, our_voice, speech_tokens):
    our_wav = _s3gen_end_to_end(reference, ours, our_voice, speech_tokens, 21, "s3gen_e2e_wave_rel_err")
    assert our_wav.shape[-1] == (2 * (our_voice.prompt_tokens.shape[1] + len(speech_tokens))
                                 - our_voice.prompt_feat.shape[1]) * 480


def test_token_cleanup_matches_reference():
    from chatterbox.models.s3tokenizer import drop_invalid_tokens
    for toks in ([5, 6561, 7, 8, 6562, 9], [1, 2, 3], [6561, 4, 6600, 5], [3, 6562]):
        ref = drop_invalid_tokens(torch.tensor(toks))
        ref = ref[ref < 6561].tolist()
        assert clean_speech_tokens(toks) == ref


def test_text_normalisation_and_tokens_match_reference(reference, ours):
    from chatterbox.tts import punc_norm

    from cadence.text.normalize import normalize_text
    for text in ["", "hello   world", "wait… what: this; that — “quoted”", "Done!", "a - b", "x...y",
                 "café naïve 日本", "It’s 5:30; ok"]:
        assert normalize_text(text) == punc_norm(text), text
        norm = punc_norm(text)
        assert ours.tokenizer.encode(norm) == reference.tokenizer.text_to_tokens(norm)[0].tolist(), text


def test_imported_reference_conds_give_the_reference_audio(reference, ours, speech_tokens, tmp_path):
    """A conds.pt written by the reference, imported into a library and used, renders what the reference renders."""
    reference.conds.save(tmp_path / "conds.pt")
    voice = ours.library(tmp_path / "voices").import_conds(tmp_path / "conds.pt", "ref")
    c = reference.conds
    assert torch.equal(voice.prompt_tokens, c.gen["prompt_token"].cpu())
    assert torch.equal(voice.prompt_feat, c.gen["prompt_feat"].cpu())
    _s3gen_end_to_end(reference, ours, voice, speech_tokens, 31, "imported_conds_wave_rel_err")
