import pytest
import torch

from cadence.layers.sampling import process_logits, sample
from cadence.sampling_params import SamplingParams


def _t(v, dt=torch.float32):
    return torch.tensor([v], dtype=dt)


def _probs(logits, counts=None, cfg=0.0, rep=1.0, temp=1.0, min_p=0.0, top_p=1.0, top_k=0):
    counts = torch.zeros_like(logits, dtype=torch.int32) if counts is None else counts
    return process_logits(logits, None, counts, _t(cfg), _t(rep), _t(temp), _t(min_p), _t(top_p), _t(top_k, torch.long))


def test_plain_softmax_when_all_filters_off():
    logits = torch.randn(1, 50)
    assert torch.allclose(_probs(logits), logits.softmax(-1), atol=1e-7)


def test_repetition_penalty_lowers_seen_tokens_only():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.5]])
    counts = torch.tensor([[1, 1, 0, 0]], dtype=torch.int32)
    p = _probs(logits, counts, rep=2.0)
    expected = torch.tensor([[1.0, -2.0, 0.5, 0.5]]).softmax(-1)
    assert torch.allclose(p, expected, atol=1e-7)


def test_min_p_top_k_top_p_drop_the_tail():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert _probs(logits, min_p=0.2)[0, 3] == 0 and _probs(logits, min_p=0.2)[0, 2] > 0
    assert (_probs(logits, top_k=2)[0, 2:] == 0).all()
    p = _probs(logits, top_p=0.7)
    assert (p[0, 2:] == 0).all() and torch.isclose(p.sum(), torch.tensor(1.0))


def test_cfg_combines_cond_and_uncond():
    cond, uncond = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    counts = torch.zeros(1, 2, dtype=torch.int32)
    p = process_logits(cond, uncond, counts, _t(0.5), _t(1.0), _t(1.0), _t(0.0), _t(1.0), _t(0, torch.long))
    assert torch.allclose(p, torch.tensor([[1.5, -0.5]]).softmax(-1))


def test_exponential_race_matches_distribution():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0]])
    draws = [int(sample(probs, torch.empty(1, 4).exponential_(generator=g))) for _ in range(4000)]
    freq = torch.bincount(torch.tensor(draws), minlength=4).float() / len(draws)
    assert freq[3] == 0
    assert torch.allclose(freq[:3], probs[0, :3], atol=0.03)


@pytest.mark.parametrize("kw", [dict(temperature=0), dict(temperature=-1), dict(top_p=0), dict(top_p=1.5),
                                dict(min_p=1.0), dict(repetition_penalty=0.5), dict(max_new_tokens=0),
                                dict(top_k=-1), dict(seed=-3), dict(exaggeration=3.0), dict(cfg_weight="a"),
                                dict(max_new_tokens=1.5), dict(temperature=True)])
def test_sampling_params_reject_bad_values(kw):
    with pytest.raises(ValueError):
        SamplingParams(**kw)


def _two_sorts(logits, top_k, top_p):
    """Top-k then top-p as two separate filters, each with its own sort (HF's warpers, one after the other)."""
    kth = torch.sort(logits, dim=-1, descending=True).values.gather(-1, (top_k - 1).clamp(0, logits.shape[-1] - 1)[:, None])
    logits = torch.where((top_k[:, None] > 0) & (logits < kth), float("-inf"), logits)
    s, order = torch.sort(logits, dim=-1)
    tail = s.softmax(-1).cumsum(-1) <= (1 - top_p[:, None])
    tail[:, -1] = False
    return logits.masked_fill(torch.zeros_like(tail).scatter(-1, order, tail), float("-inf")).softmax(-1)


def test_one_sort_for_top_k_and_top_p_equals_two_filters():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 500, generator=g) * 3
    top_k = torch.tensor([0, 1, 5, 100, 499, 1000])
    top_p = torch.tensor([0.9, 0.95, 1.0, 0.5, 0.99, 0.8])
    one = lambda v: torch.full((6,), v)  # noqa: E731
    got = process_logits(logits, None, torch.zeros(6, 500, dtype=torch.int32), one(0.0), one(1.0), one(1.0),
                         one(0.0), top_p, top_k, use_top_k=True, use_top_p=True, penalty_last=True)
    assert torch.equal(got, _two_sorts(logits, top_k, top_p))
    assert (got[1] > 0).sum() == 1 and (got[2] > 0).sum() == 5


def test_race_noise_is_a_function_of_seed_and_step_alone():
    """A row's draws depend on its own (seed, step) only: the same alone or beside other rows, different for
    another seed or step, and Exp(1)-distributed (mean and variance 1, the uniform behind it flat)."""
    from cadence.layers.race_noise import race_noise
    seeds = torch.tensor([5, 5, 6, 2 ** 63 - 1], dtype=torch.long)
    steps = torch.tensor([0, 1, 0, 0], dtype=torch.long)
    batch = race_noise(seeds, steps, 8194)
    for i in range(4):
        assert torch.equal(race_noise(seeds[i:i + 1], steps[i:i + 1], 8194)[0], batch[i])
    assert not torch.equal(batch[0], batch[1]) and not torch.equal(batch[0], batch[2])
    assert float(torch.corrcoef(batch[:3])[0, 1:].abs().max()) < 0.05
    draws = race_noise(torch.arange(64), torch.zeros(64, dtype=torch.long), 8194).flatten()
    assert abs(float(draws.mean()) - 1) < 0.01 and abs(float(draws.var()) - 1) < 0.03
    hist = torch.histc(torch.exp(-draws), bins=10, min=0, max=1) / draws.numel()
    assert float((hist - 0.1).abs().max()) < 0.005
