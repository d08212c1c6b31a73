"""One copy of each running voice's prompt keys and values for the batched decoder (`SharedPrompts`): entries are
filled once per voice, held while its slots decode, reused least recently used first; rows get the store's
values in their own cache; the engine's tokens with the store equal each request's tokens alone. (The kernel
that reads the store is checked in the Triton interpreter, `test_triton_kernels.py`, and on CUDA.)"""

import pytest
import torch

from cadence.engine import shared_prompts
from cadence.engine.shared_prompts import SharedPrompts
from cadence.random_checkpoint import synthetic_voice


@pytest.fixture(scope="module")
def turbo_tts(tmp_path_factory):
    from cadence.random_checkpoint import make_random_turbo_checkpoint
    from cadence.tts import TTS
    path = make_random_turbo_checkpoint(tmp_path_factory.mktemp("turbo_shared"), seed=3, tiny=True)
    tts = TTS.from_dir(path, device="cpu", watermark=False, memory_plan="fp32")
    yield tts
    tts.close()


def _voices(tts, n):
    return [tts.prepare_voice(synthetic_voice(seconds=5.0 + i, seed=20 + i), 24000) for i in range(n)]


def _cache(tts, rows, length=256):
    c = tts.t3.cfg
    shape = (c.n_layers, rows, c.n_heads, length, c.head_dim)
    return torch.zeros(shape), torch.zeros(shape)


def test_entries_are_filled_once_per_voice_held_while_used_and_reused_oldest_first(turbo_tts, monkeypatch):
    tts = turbo_tts
    a, b, c = (tts.voice_prompt(v) for v in _voices(tts, 3))
    store = SharedPrompts(tts.t3, entries=2, rows=4)
    k, v = _cache(tts, 4)
    want_k, want_v = tts.t3_runner.voice_prefix(a[1])  # the same computation as a lone request's prefix
    fills = []
    real = tts.t3.forward_backbone
    monkeypatch.setattr(tts.t3, "forward_backbone", lambda *args, **kw: fills.append(1) or real(*args, **kw))

    assert store.attach(0, slice(0, 1), a, k, v) and store.attach(1, slice(1, 2), a, k, v)
    assert len(fills) == 1 and store.users == [2, 0]
    P = a[1].shape[1]
    assert torch.equal(store.k[:, 0:1, :, :P], want_k) and torch.equal(store.v[:, 0:1, :, :P], want_v)
    for row in (0, 1):  # the rows hold the store's values, so any kernel reading them sees the same keys
        assert torch.equal(k[:, row, :, :P], want_k[:, 0]) and torch.equal(v[:, row, :, :P], want_v[:, 0])
    assert store.row_len.tolist() == [P, P, 0, 0] and store.row_entry[:2].tolist() == [0, 0]
    assert store.counts.tolist() == [2, 0] and store.members[0, :2].tolist() == [0, 1] and store.entry_len[0] == P

    assert store.attach(2, slice(2, 3), b, k, v) and len(fills) == 2 and store.row_entry[2] == 1
    assert not store.attach(3, slice(3, 4), c, k, v)  # every entry held: the row keeps its own keys
    assert store.row_len[3] == 0 and len(fills) == 2

    store.detach(2, slice(2, 3))  # b's entry is free now, a's is still held
    assert store.counts.tolist() == [2, 0]
    assert store.row_len[2] == 0 and store.users == [2, 0]
    assert store.attach(3, slice(3, 4), c, k, v) and store.row_entry[3] == 1 and store.voices[1] == c[0]
    assert store.attach(3, slice(3, 4), c, k, v) and store.users == [2, 1]  # admitted again: still one user
    store.detach(0, slice(0, 1))
    store.detach(1, slice(1, 2))
    store.detach(3, slice(3, 4))
    store.detach(3, slice(3, 4))  # a slot freed twice (a cancelled request) changes nothing
    assert store.users == [0, 0] and store.counts.tolist() == [0, 0]
    # both free: a comes back to its entry without a fill; b takes the least recently used one (c's, then a's)
    assert store.attach(0, slice(0, 1), a, k, v) and len(fills) == 3 and store.row_entry[0] == 0
    assert store.attach(1, slice(1, 2), b, k, v) and store.row_entry[1] == 1 and len(fills) == 4


def test_a_cfg_pair_shares_one_entry_and_a_prompt_too_long_is_not_shared(tiny_tts):
    tts = tiny_tts
    voice = tts.voice_prompt(_voices(tts, 1)[0])
    store = SharedPrompts(tts.t3, entries=1, rows=4)
    k, v = _cache(tts, 4)
    assert store.positions == tts.t3.max_voice_positions == voice[1].shape[1]
    P = voice[1].shape[1]
    assert store.attach(1, slice(2, 4), voice, k, v)
    assert store.row_len.tolist() == [0, 0, P, P] and store.members[0, :2].tolist() == [2, 3]
    assert torch.equal(k[:, 2], k[:, 3]) and k[:, 2].abs().sum() > 0
    store.detach(1, slice(2, 4))
    long = (voice[0] + "-long", torch.cat((voice[1], voice[1][:, :1]), dim=1))
    assert not store.attach(1, slice(2, 4), long, k, v)


def test_engine_tokens_with_shared_prompts_equal_each_request_alone(tmp_path_factory, monkeypatch):
    """Four requests over three voices with two entries: two share one, one takes the other, one reads its own
    keys; every request's tokens equal its tokens alone, and every entry is released at the end."""
    from cadence.random_checkpoint import make_random_turbo_checkpoint
    from cadence.tts import TTS
    monkeypatch.setattr(shared_prompts, "shared_voices", lambda t3: 2)
    path = make_random_turbo_checkpoint(tmp_path_factory.mktemp("turbo_shared_engine"), seed=3, tiny=True)
    tts = TTS.from_dir(path, device="cpu", watermark=False, memory_plan="fp32")
    try:
        a, b, c = _voices(tts, 3)
        voices = [a, b, a, c]
        texts = ["One voice [laugh] here.", "Another voice.", "The first voice again, longer.", "A third."]
        knobs = dict(seed=[1, 2, 3, 4], max_new_tokens=[30, 40, 35, 25])
        alone = [tts.generate(t, voice=voices[i], speech_tokens_only=True, **{k: x[i] for k, x in knobs.items()})
                 for i, t in enumerate(texts)]
        many = tts.generate_many(texts, voice=voices, speech_tokens_only=True, **knobs)
        assert [x.tokens for x in alone] == [y.tokens for y in many]
        prompts = tts.engine.decoder.prompts
        assert prompts is not None and sum(v is not None for v in prompts.voices) == 2
        assert prompts.users == [0, 0] and int(prompts.row_len.sum()) == 0
    finally:
        tts.close()


def test_voices_are_shared_on_cuda_where_the_prompt_is_long():
    """Turbo's prompt (up to 376 positions) on CUDA: 8 voices; the original model's 33, or the CPU: none."""
    from types import SimpleNamespace
    pytest.importorskip("triton")
    t3 = lambda dev, n: SimpleNamespace(device=torch.device(dev), max_voice_positions=n)  # noqa: E731
    assert shared_prompts.shared_voices(t3("cuda", 376)) == shared_prompts.SHARED_VOICES == 8
    assert shared_prompts.shared_voices(t3("cuda", 33)) == 0
    assert shared_prompts.shared_voices(t3("cpu", 376)) == 0
