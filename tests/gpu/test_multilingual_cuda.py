"""The multilingual end-of-speech rules inside captured decode steps (skipped without CUDA): the single-request
graph decoder and the batched engine's graphs decide as the eager decoder does, with the rules on and off."""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TEXTS = ["Bonjour tout le monde, comment allez-vous?", "Guten Tag, wie geht es Ihnen heute?", "Hola amigos."]
LANGS = ["fr", "de", "es"]
# near-greedy, no penalty: the random model repeats tokens, so the rules force EOS early
KNOBS = dict(max_new_tokens=60, temperature=0.05, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def mtl_ckpt(tmp_path_factory):
    from cadence.random_checkpoint import make_random_multilingual_checkpoint
    return make_random_multilingual_checkpoint(tmp_path_factory.mktemp("mtl_gpu"), seed=1, tiny=True)


@pytest.fixture(scope="module")
def graphed(mtl_ckpt):
    from cadence.tts import TTS
    tts = TTS.from_dir(mtl_ckpt, device="cuda", watermark=False, dtype="float32", max_batch=4)
    yield tts
    tts.close()


@pytest.fixture(scope="module")
def eager(mtl_ckpt):
    from cadence.tts import TTS
    tts = TTS.from_dir(mtl_ckpt, device="cuda", watermark=False, dtype="float32", enforce_eager=True)
    yield tts
    tts.close()


def test_graphs_decide_as_the_eager_decoder(graphed, eager):
    runs = {}
    for stop in (None, False):
        def alone(tts):
            return [tts.generate(t, language=lang, seed=i, alignment_stop=stop, **KNOBS).tokens
                    for i, (t, lang) in enumerate(zip(TEXTS, LANGS))]
        reference = alone(eager)
        assert graphed.t3_runner.use_graphs and alone(graphed) == reference
        batched = graphed.generate_many(TEXTS, language=LANGS, seed=[0, 1, 2], alignment_stop=stop, **KNOBS)
        assert graphed.engine.decoder.use_graphs and [b.tokens for b in batched] == reference
        runs[stop] = reference
    # the rules cut some request short on a repeated pair; what they let through is what the model said without them
    assert any(len(a) < len(b) for a, b in zip(runs[None], runs[False]))
    for a, b in zip(runs[None], runs[False]):
        assert b[:len(a)] == a and (len(a) == len(b) or a[-1] == a[-2])
