"""`compile=True` on CUDA (skipped without CUDA): the compiled flow gives the eager mel to bf16 rounding, the
vocoder (left eager) the same waveform, and the engine serves one-piece batches and streams with compiled blocks
inside its captured graphs."""

import numpy as np
import pytest
import torch

from tests.conftest import rel_err

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def pair(tiny_ckpt):
    from cadence.tts import TTS
    eager = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False)
    compiled = TTS.from_dir(tiny_ckpt, device="cuda", watermark=False, compile=True)
    yield eager, compiled
    eager.close()
    compiled.close()


def _items(tts, lengths=(23, 61, 40, 52)):
    from cadence.engine.rng import RequestRNG
    g = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 6561, (n,), generator=g), tts.default_voice, RequestRNG(i, "cuda"))
            for i, n in enumerate(lengths)]


def test_compiled_s3gen_matches_eager(pair):
    from cadence.engine.rng import RequestRNG
    eager, compiled = pair
    assert compiled.plan.compile and not eager.plan.compile
    mels_e = eager.audio_runner.mel_batch(_items(eager))
    mels_c = compiled.audio_runner.mel_batch(_items(compiled))
    for a, b in zip(mels_c, mels_e):  # bf16 flow: Inductor keeps fp32 between fused ops, eager rounds each
        assert a.shape == b.shape and rel_err(a.cpu(), b.cpu()) < 5e-2
    rngs = lambda: [RequestRNG(10 + i, "cuda") for i in range(len(mels_e))]  # noqa: E731
    wav_e = eager.audio_runner.vocode_batch(mels_e, rngs())
    wav_c = compiled.audio_runner.vocode_batch(mels_e, rngs())  # not compiled: same numbers
    for a, b in zip(wav_c, wav_e):
        assert rel_err(a.cpu(), b.cpu()) < 1e-5


def test_compiled_engine_serves_batches_and_streams(pair):
    _, tts = pair
    texts = ["Hello there, friend.", "A second request in the same batch.", "Third.", "And a fourth one here."]
    many = tts.generate_many(texts, seed=[1, 2, 3, 4], max_new_tokens=[30, 45, 20, 38], speech_tokens_only=True)
    for r, n in zip(many, (30, 45, 20, 38)):
        assert 0 < len(r.tokens) <= n and r.samples.size > 0 and np.isfinite(r.samples).all()
    chunks = list(tts.stream("A streamed sentence with compiled blocks.", seed=5, max_new_tokens=60))
    audio = np.concatenate([c.samples for c in chunks])
    assert chunks[-1].final and audio.size > 0 and np.isfinite(audio).all()
