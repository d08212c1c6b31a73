"""Turbo on a tiny random checkpoint: family detection, strict loading of GPT-2's (in, out) layout, the tags
as single tokens, Turbo's sampling order."""

import pytest
import torch

from cadence.checkpoint import CheckpointError, load_weights, official_shapes
from cadence.family import ENGLISH, TURBO, TURBO_TAGS, detect_family, family_named
from cadence.layers.sampling import process_logits
from cadence.text.turbo_tokenizer import TurboTokenizer


@pytest.fixture(scope="module")
def turbo_tiny(tmp_path_factory):
    from cadence.random_checkpoint import make_random_turbo_checkpoint
    return make_random_turbo_checkpoint(tmp_path_factory.mktemp("turbo_tiny"), seed=1, tiny=True)


def _load(path):
    with torch.device("meta"):
        t3 = TURBO.build_t3(tiny=True)
    load_weights(t3, path / TURBO.t3_file)
    return t3


def test_detect_and_name(turbo_tiny, tiny_ckpt):
    assert detect_family(turbo_tiny) is TURBO
    assert detect_family(tiny_ckpt) is ENGLISH
    assert family_named("turbo") is TURBO
    with pytest.raises(ValueError, match="english, turbo"):
        family_named("nano")


def test_official_layout_loads_transposed_and_skips_unused(turbo_tiny):
    from safetensors import safe_open
    t3 = _load(turbo_tiny)
    with safe_open(str(turbo_tiny / TURBO.t3_file), "pt") as f:
        stored = f.get_tensor("tfmr.h.0.attn.c_attn.weight")
        assert "tfmr.wte.weight" in f.keys() and "text_head.weight" in f.keys()
    c = t3.cfg
    assert tuple(stored.shape) == (c.dim, 3 * c.dim)  # GPT-2's Conv1D keeps (in, out)
    assert torch.equal(t3.tfmr.h[0].attn.c_attn.weight, stored.t())
    assert not hasattr(t3, "text_head") and not hasattr(t3.tfmr, "wte")
    assert official_shapes(t3)["tfmr.h.0.mlp.c_fc.weight"] == (c.dim, c.ffn_dim)


def test_wrong_shape_is_refused(turbo_tiny, tmp_path):
    from safetensors.torch import load_file, save_file
    state = load_file(str(turbo_tiny / TURBO.t3_file))
    state["tfmr.wpe.weight"] = state["tfmr.wpe.weight"][:10]
    save_file(state, str(tmp_path / TURBO.t3_file))
    with pytest.raises(CheckpointError, match="wrong shape.*tfmr.wpe.weight"):
        _load(tmp_path)


def test_tags_are_single_tokens(turbo_tiny):
    tok = TurboTokenizer(turbo_tiny)
    ids = tok.encode("Well [laugh] that was fun [sigh].")
    assert 50257 + TURBO_TAGS.index("[laugh]") in ids and 50257 + TURBO_TAGS.index("[sigh]") in ids
    assert all(tok.token_id(t) == 50257 + i for i, t in enumerate(TURBO_TAGS))
    assert tok.decode(ids) == "Well [laugh] that was fun [sigh]."


def test_prefill_and_decode_step_shapes(turbo_tiny):
    t3 = _load(turbo_tiny)
    c = t3.cfg
    voice = t3.voice_embeds(torch.randn(1, 256), torch.randint(0, 6561, (1, 7)))
    x = t3.prefill_embeds(voice, None, torch.tensor([5, 6, 7]), cfg_pair=False)
    assert x.shape == (1, 1 + 7 + 3 + 1, c.dim)
    with pytest.raises(ValueError, match="no classifier-free guidance"):
        t3.prefill_embeds(voice, None, torch.tensor([5]), cfg_pair=True)
    k = torch.zeros(c.n_layers, 1, c.n_heads, 16, c.head_dim)
    v = torch.zeros_like(k)
    h = t3.forward_backbone(x, k, v, torch.arange(x.shape[1]), None)
    # The cached decode step equals re-running the whole sequence.
    step = t3.speech_step_embed(torch.tensor([42]), None)[:, None]
    h1 = t3.forward_backbone(step, k, v, torch.tensor([x.shape[1]]), torch.ones(1, x.shape[1] + 1, dtype=torch.bool))
    full = torch.cat((x, step), dim=1)
    h_full = t3.forward_backbone(full, torch.zeros_like(k), torch.zeros_like(v), torch.arange(full.shape[1]), None)
    assert h.shape == (1, c.dim) and torch.allclose(h1, h_full, atol=1e-5)


def test_turbo_sampling_order():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    counts = torch.tensor([[0, 1, 0, 0, 0]])
    one = lambda v, dt=torch.float32: torch.tensor([v], dtype=dt)  # noqa: E731
    zero = one(0.0)
    probs = process_logits(logits, None, counts, zero, one(2.0), one(1.0), zero, one(1.0), one(2, torch.long),
                           penalty_last=True)
    # top-k keeps 3.0 and 2.0; then the penalty halves 2.0 (seen): softmax over (3, 1).
    expected = torch.tensor([3.0, 1.0]).softmax(-1)
    assert torch.allclose(probs[0, :2], expected) and probs[0, 2:].sum() == 0
    probs = process_logits(logits, None, counts * 0, zero, one(1.0), one(1.0), zero, one(0.5), one(0, torch.long),
                           penalty_last=True)
    assert probs[0, 0] == 1.0  # top-p 0.5: the top token alone holds more than half
    # Order matters: with top-k 1 after a penalty on the top token, penalty-first keeps 2.0 instead.
    counts0 = torch.tensor([[1, 0, 0, 0, 0]])
    first = process_logits(logits, None, counts0, zero, one(4.0), one(1.0), zero, one(1.0), one(1, torch.long))
    last = process_logits(logits, None, counts0, zero, one(4.0), one(1.0), zero, one(1.0), one(1, torch.long),
                          penalty_last=True)
    assert first[0].argmax() == 1 and last[0].argmax() == 0


def test_turbo_generate_int8_save_and_reload(turbo_tiny, tmp_path):
    """Turbo through the library: refused knobs, family defaults, silence tail, and the int8 plan's saved T3
    (biased GPT-2 projections) reloading to the same tokens."""
    import shutil

    from cadence.sampling_params import SamplingParams
    from cadence.tts import TTS
    tts = TTS.from_dir(turbo_tiny, device="cpu", watermark=False)
    assert tts.family is TURBO
    with pytest.raises(ValueError, match="min_p: not a knob of Chatterbox turbo"):
        tts.generate("Hi.", min_p=0.1)
    with pytest.raises(ValueError, match="cfg_weight"):
        tts.generate("Hi.", params=SamplingParams(max_new_tokens=5))  # the original model's defaults
    p = SamplingParams.for_family(TURBO, max_new_tokens=12, seed=3)
    assert (p.top_k, p.top_p, p.cfg_weight, p.min_p) == (1000, 0.95, 0.0, 0.0)
    audio = tts.generate("Well [laugh] hi.", params=p)
    assert audio.samples.size == (len(audio.tokens) + TURBO.silence_tokens) * 2 * 480
    ckpt = tmp_path / "ck"
    shutil.copytree(turbo_tiny, ckpt)
    q = TTS.from_dir(ckpt, device="cpu", watermark=False, memory_plan="int8")
    first = q.generate("Well [laugh] hi.", params=p).tokens
    q.save_quantized()
    again = TTS.from_dir(ckpt, device="cpu", watermark=False, memory_plan="int8")
    assert again.generate("Well [laugh] hi.", params=p).tokens == first


def test_cli_turbo_checkpoint_and_refused_knob(tmp_path):
    import subprocess
    import sys
    ck = tmp_path / "t"
    run = lambda *a: subprocess.run([sys.executable, "-m", "cadence.cli", *a], capture_output=True, text=True)  # noqa: E731
    r = run("checkpoint", "random", str(ck), "--family", "turbo", "--tiny")
    assert r.returncode == 0 and "turbo" in r.stdout
    r = run("say", "Hi [sigh].", "-o", str(tmp_path / "o.wav"), "--model", str(ck), "--exaggeration", "0.7",
            "--no-watermark")
    assert r.returncode == 2 and "exaggeration: not a knob of Chatterbox turbo" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("say", "Hi [sigh].", "-o", str(tmp_path / "o.wav"), "--model", str(ck), "--max-new-tokens", "10",
            "--seed", "1", "--no-watermark")
    assert r.returncode == 0 and (tmp_path / "o.wav").is_file(), r.stderr
