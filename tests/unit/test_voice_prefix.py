"""A voice's part of T3's prompt, computed once per resident voice and copied into each request's KV cache:
the same logits and tokens as recomputing it, for both backbones (Llama with the CFG pair, GPT-2 without)."""

import pytest
import torch

from cadence.random_checkpoint import synthetic_voice


@pytest.fixture(scope="module")
def turbo_tts(tmp_path_factory):
    from cadence.random_checkpoint import make_random_turbo_checkpoint
    from cadence.tts import TTS
    path = make_random_turbo_checkpoint(tmp_path_factory.mktemp("turbo_prefix"), seed=1, tiny=True)
    return TTS.from_dir(path, device="cpu", watermark=False, memory_plan="fp32")


@pytest.mark.parametrize("model", ["english", "turbo"])
def test_prefix_gives_the_logits_and_tokens_of_a_full_prefill(model, tiny_tts, turbo_tts):
    tts = tiny_tts if model == "english" else turbo_tts
    voice = tts.prepare_voice(synthetic_voice(seconds=6.0), 24000)
    params = tts.params(seed=3, max_new_tokens=12)
    prefill = tts.prefill("Hello there, a test of the prefix.", voice, params)
    prefix = tts.voice_prefix(voice)
    P = prefix[0].shape[-2]
    assert 0 < P < prefill.shape[1] and prefix[0].shape[1] == 1  # one row, shared by both CFG rows
    forced = list(range(100, 112))
    full = tts.t3_runner.generate(prefill, params, 3, forced_tokens=forced, keep_logits=True)
    cached = tts.t3_runner.generate(prefill, params, 3, forced_tokens=forced, keep_logits=True, prefix=prefix)
    for a, b in zip(full.logits, cached.logits):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (a - b).abs().max()
    sampled = [tts.t3_runner.generate(prefill, params, 3, speech_only=True, prefix=p).tokens for p in (None, prefix)]
    assert sampled[0] == sampled[1] and len(sampled[0]) == 12


def test_generate_computes_the_prefix_once_per_voice_and_the_cache_counts_it(turbo_tts):
    tts = turbo_tts
    voice = tts.prepare_voice(synthetic_voice(seconds=5.0), 24000)
    first = tts.generate("One.", voice, seed=1, max_new_tokens=4, speech_tokens_only=True)
    resident = tts.voice_cache.get(voice)
    kv = resident.t3_prefix[tts.t3.dtype]
    tts.generate("Two.", voice, seed=1, max_new_tokens=4, speech_tokens_only=True)
    assert resident.t3_prefix[tts.t3.dtype] is kv  # reused, not recomputed
    prefix_bytes = sum(t.numel() * t.element_size() for t in kv)
    assert resident.nbytes >= resident.voice.nbytes + prefix_bytes
    assert first.samples.size > 0
