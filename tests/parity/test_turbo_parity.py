"""Chatterbox Turbo: Cadence vs chatterbox-tts==0.1.7's Turbo T3 on the same full-size random checkpoint
(made by Cadence's maker, read by the reference's own classes), fp32.

Checked: text tokens equal (the reference's AutoTokenizer on the same files, tags single ids); T3 logits
<= 1e-4 relative at every teacher-forced step; the processed sampling distribution <= 1e-6."""

import os

import pytest
import torch

from cadence.checkpoint import load_weights
from cadence.bench.reference_turbo import norm_loudness_numpy1
from cadence.family import TURBO, TURBO_TAGS
from cadence.layers.sampling import process_logits
from cadence.text.normalize import normalize_turbo_text
from cadence.text.turbo_tokenizer import TurboTokenizer
from tests.conftest import rel_err

pytestmark = pytest.mark.parity
TEXT = "Well [laugh] that was fun [sigh]. Let's do it again…"
N_STEPS = int(os.environ.get("CADENCE_PARITY_T3_STEPS", "6"))


@pytest.fixture(scope="module")
def turbo_ckpt(tmp_path_factory):
    from cadence.random_checkpoint import make_random_turbo_checkpoint
    return make_random_turbo_checkpoint(tmp_path_factory.mktemp("turbo"), seed=3)


@pytest.fixture(scope="module")
def reference_tts(turbo_ckpt, device):
    """The reference Turbo, loaded by its own `from_local` from the checkpoint Cadence's maker wrote."""
    from chatterbox.tts_turbo import ChatterboxTurboTTS
    return ChatterboxTurboTTS.from_local(str(turbo_ckpt), device)


@pytest.fixture(scope="module")
def reference_t3(reference_tts):
    return reference_tts.t3


@pytest.fixture(scope="module")
def our_t3(turbo_ckpt, device):
    with torch.device("meta"):
        t3 = TURBO.build_t3(tiny=False)
    load_weights(t3, turbo_ckpt / TURBO.t3_file)
    return t3.to(device).eval()


def test_text_tokens_match_reference(turbo_ckpt):
    from chatterbox.tts_turbo import punc_norm
    from transformers import AutoTokenizer
    ref = AutoTokenizer.from_pretrained(str(turbo_ckpt))
    ours = TurboTokenizer(turbo_ckpt)
    for text in (TEXT, "hello:   world — “quoted”", "No ending", "[clear throat] Ahem... [cough]"):
        assert normalize_turbo_text(text) == punc_norm(text)
        assert ours.encode(normalize_turbo_text(text)) == ref(punc_norm(text)).input_ids
    ids = ours.encode("Well [laugh] that was fun [sigh].")
    assert ids.count(50257 + TURBO_TAGS.index("[laugh]")) == 1 and ids.count(50257 + TURBO_TAGS.index("[sigh]")) == 1
    assert len(ref) == 50276


def _voice(device):
    g = torch.Generator().manual_seed(11)
    speaker = torch.randn(1, 256, generator=g)
    prompt = torch.randint(0, 6561, (1, 375), generator=g)
    return speaker.to(device), prompt.to(device)


def _reference_teacher_forced(t3, text_ids, speaker, prompt, forced, knobs):
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    logits, probs = [], []
    hook = t3.speech_head.register_forward_hook(lambda m, i, o: logits.append(o[:, -1].detach().cpu().clone()))
    step = iter(forced)
    real = torch.multinomial

    def forced_multinomial(p, num_samples=1, **_):
        probs.append(p.detach().cpu().clone())
        return torch.tensor([[next(step)]], device=p.device)

    torch.multinomial = forced_multinomial
    try:
        t3.inference_turbo(T3Cond(speaker_emb=speaker, cond_prompt_speech_tokens=prompt),
                           torch.tensor([text_ids], device=speaker.device), max_gen_len=len(forced) - 1, **knobs)
    finally:
        torch.multinomial = real
        hook.remove()
    return logits, probs


@torch.no_grad()
def test_t3_logits_and_sampling_distribution(turbo_ckpt, reference_t3, our_t3, device):
    knobs = {k: TURBO.defaults[k] for k in ("temperature", "top_k", "top_p", "repetition_penalty")}
    text_ids = TurboTokenizer(turbo_ckpt).encode(normalize_turbo_text(TEXT))
    speaker, prompt = _voice(device)
    g = torch.Generator().manual_seed(5)
    forced = torch.randint(0, 6561, (N_STEPS,), generator=g).tolist()
    forced[2] = forced[1]  # a repeat, so the repetition penalty acts on a generated token
    ref_logits, ref_probs = _reference_teacher_forced(reference_t3, text_ids, speaker, prompt, forced, knobs)
    assert len(ref_logits) == N_STEPS

    c = our_t3.cfg
    voice = our_t3.voice_embeds(speaker, prompt)
    x = our_t3.prefill_embeds(voice, None, torch.tensor(text_ids, device=device), cfg_pair=False)
    L = x.shape[1]
    span = L + N_STEPS
    k = torch.zeros(c.n_layers, 1, c.n_heads, span, c.head_dim, device=device)
    v = torch.zeros_like(k)
    hidden = our_t3.forward_backbone(x, k, v, torch.arange(L, device=device), None)
    counts = torch.zeros(1, c.speech_vocab, device=device)
    counts[0, c.start_speech] = 1  # the first step's penalty sees the start token, later ones only outputs
    t = lambda val, dt=torch.float32: torch.tensor([val], dtype=dt, device=device)  # noqa: E731
    worst_logit, worst_prob = 0.0, 0.0
    for i, token in enumerate(forced):
        logits = our_t3.speech_logits(hidden)
        probs = process_logits(logits, None, counts, t(0.0), t(knobs["repetition_penalty"]), t(knobs["temperature"]),
                               t(0.0), t(knobs["top_p"]), t(knobs["top_k"], torch.long), penalty_last=True)
        worst_logit = max(worst_logit, rel_err(logits.cpu(), ref_logits[i]))
        worst_prob = max(worst_prob, float((probs.cpu() - ref_probs[i]).abs().max()))
        if i == 0:
            counts.zero_()
        counts[0, token] += 1
        pos = torch.tensor([L + i], device=device)
        x = our_t3.speech_step_embed(torch.tensor([token], device=device), None)[:, None]
        mask = torch.ones(1, L + i + 1, dtype=torch.bool, device=device)
        hidden = our_t3.forward_backbone(x, k[..., : L + i + 1, :], v[..., : L + i + 1, :], pos, mask)
    print(f"turbo T3 parity: logits rel err {worst_logit:.2e}, probs abs err {worst_prob:.2e}")
    assert worst_logit <= 1e-4, worst_logit
    assert worst_prob <= 1e-6, worst_prob


@pytest.fixture(scope="module")
def reference_s3gen(reference_tts):
    return reference_tts.s3gen


@pytest.fixture(scope="module")
def our_s3gen(turbo_ckpt, device):
    from cadence.checkpoint import _materialise_buffers
    from cadence.models.s3gen import S3Gen
    with torch.device("meta"):
        s3gen = S3Gen(TURBO.s3gen(tiny=False))
    load_weights(s3gen, turbo_ckpt / TURBO.s3gen_file)
    _materialise_buffers(s3gen, "cpu")
    return s3gen.to(device).eval()


@torch.no_grad()
def test_meanflow_mel_matches_reference(reference_s3gen, our_s3gen, device):
    g = torch.Generator().manual_seed(9)
    n_prompt, n_new = 40, 27
    prompt_tokens = torch.randint(0, 6561, (1, n_prompt), generator=g)
    new_tokens = torch.cat((torch.randint(0, 6561, (n_new - 3,), generator=g), torch.full((3,), 4299)))
    ref_dict = dict(prompt_token=prompt_tokens.to(device), prompt_token_len=torch.tensor([n_prompt], device=device),
                    prompt_feat=torch.randn(1, 2 * n_prompt, 80, generator=g).to(device) * 0.5,
                    prompt_feat_len=None, embedding=torch.randn(1, 192, generator=g).to(device))
    # The reference draws the new frames' noise first, then noise over every frame, and puts the first over
    # the second's new part: the same draws from the same seed, laid out the same way.
    torch.manual_seed(21)
    ref_mel = reference_s3gen.flow_inference(new_tokens.to(device), ref_dict=dict(ref_dict), n_cfm_timesteps=2,
                                             finalize=True)
    torch.manual_seed(21)
    new_noise = torch.randn(1, 80, 2 * n_new, device=device)
    noise = torch.randn(1, 80, 2 * (n_prompt + n_new), device=device)
    noise[..., 2 * n_prompt:] = new_noise
    tokens = torch.cat((prompt_tokens.to(device), new_tokens[None].to(device)), dim=1)
    ours = our_s3gen.flow(tokens, torch.tensor([n_prompt + n_new], device=device), ref_dict["prompt_feat"],
                          ref_dict["embedding"], noise, finalize=True)
    err = rel_err(ours.cpu(), ref_mel.cpu())
    print(f"turbo meanflow mel rel err {err:.2e}")
    assert ours.shape == ref_mel.shape and err <= 1e-4, err


def test_voice_conditioning_matches_reference(turbo_ckpt, reference_tts, ref_wav_path, device, monkeypatch):
    """Same recording, both preparations: loudness-normalised to -27 LUFS, 15 s / 375-token T3 prompt, no
    perceiver or emotion token. Under numpy 2 the reference's own normalisation yields float64 audio that its
    S3 tokenizer refuses (upstream #499), so the oracle runs that step with numpy 1's semantics
    (`norm_loudness_numpy1`); the value matches the reference's float64 result to 1e-6."""
    import numpy as np
    import pyloudnorm
    import soundfile as sf

    from cadence.tts import TTS
    from cadence.voices.prepare import normalize_loudness
    wav, sr = sf.read(str(ref_wav_path), dtype="float32")
    expected = norm_loudness_numpy1(wav, sr)
    assert np.allclose(reference_tts.norm_loudness(wav, sr), expected, rtol=1e-6, atol=0)  # numpy 2: float64
    assert abs(pyloudnorm.Meter(sr).integrated_loudness(expected) + 27.0) < 0.01
    assert np.array_equal(normalize_loudness(wav, sr, -27.0), expected)

    monkeypatch.setattr(reference_tts, "norm_loudness", norm_loudness_numpy1)
    reference_tts.prepare_conditionals(str(ref_wav_path), norm_loudness=True)
    c = reference_tts.conds
    ours = TTS.from_dir(turbo_ckpt, device=device, watermark=False, memory_plan="fp32", enforce_eager=True)
    voice = ours.prepare_voice(str(ref_wav_path))
    assert torch.equal(voice.t3_prompt_tokens, c.t3.cond_prompt_speech_tokens.cpu())
    assert torch.equal(voice.prompt_tokens, c.gen["prompt_token"].cpu())
    errs = {"speaker_emb": rel_err(voice.speaker_emb, c.t3.speaker_emb.cpu()),
            "prompt_feat": rel_err(voice.prompt_feat, c.gen["prompt_feat"].cpu()),
            "xvector": rel_err(voice.xvector, c.gen["embedding"].cpu())}
    print(f"turbo voice conditioning rel errs {errs}, T3 prompt {tuple(voice.t3_prompt_tokens.shape)}")
    assert max(errs.values()) <= 1e-5, errs
