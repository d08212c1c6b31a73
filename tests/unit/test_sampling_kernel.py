"""The sampling filters as one Triton kernel (`cadence.layers.sampling_kernel`), run on the CPU by Triton's
interpreter, against the eager `process_logits` they replace (which the parity tests hold to the reference):
every knob on and off, per-row settings in one batch, both penalty orders, tokens masked to -inf."""

from tests.conftest import run_kernel_check

FILTER_CHECK = r"""
import os, torch
dev = os.environ.get("CHECK_DEVICE", "cpu")
from cadence.layers.sampling import process_logits
from cadence.layers.sampling_kernel import filtered_probs
g = torch.Generator().manual_seed(0)
for V in (6563, 8194):
    # rows: Turbo's defaults; the original model's; everything off; top-k alone; top-p alone; a tiny top-p
    # (only the top token stays); k larger than the vocabulary; k = 1; a row with most tokens masked
    knobs = [  # (rep, temp, min_p, top_p, top_k)
        (1.2, 0.8, 0.0, 0.95, 1000), (1.2, 0.8, 0.05, 1.0, 0), (1.0, 1.0, 0.0, 1.0, 0), (2.0, 0.5, 0.0, 1.0, 50),
        (1.3, 1.2, 0.0, 0.8, 0), (1.2, 0.8, 0.0, 1e-6, 1000), (1.2, 0.8, 0.1, 0.9, 20000), (1.2, 0.8, 0.0, 0.95, 1),
        (1.2, 0.8, 0.0, 0.5, 30)]
    B = len(knobs)
    logits = torch.randn(B, V, generator=g) * 3
    logits[0] *= 0.1  # flat: top-k 1000 and top-p both cut
    logits[-1, 100:] = float("-inf")
    logits[[2, 4]] = logits[[2, 4]].bfloat16().float()  # bf16 logits: many ties, at the top-p edge too  # 100 live tokens: fewer than k after masking is fine too
    counts = (torch.rand(B, V, generator=g) < 0.05).to(torch.int32) * torch.randint(1, 4, (B, V), generator=g, dtype=torch.int32)
    rep, temp, min_p, top_p = (torch.tensor([r[i] for r in knobs], dtype=torch.float32) for i in range(4))
    top_k = torch.tensor([r[4] for r in knobs])
    for last in (False, True):
        ref = process_logits(logits, None, counts, torch.zeros(B), rep, temp, min_p, top_p, top_k, penalty_last=last)
        args = [t.to(dev) for t in (logits, counts, rep, temp, min_p, top_p, top_k)]
        out = filtered_probs(*args, penalty_last=last).cpu()
        assert out.shape == ref.shape and out.dtype == torch.float32
        for b in range(B):
            kept, ref_kept = out[b] > 0, ref[b] > 0
            assert torch.equal(kept, ref_kept), (V, last, b, int(kept.sum()), int(ref_kept.sum()))
            err = float((out[b] - ref[b]).abs().max())
            assert err < 1e-6, (V, last, b, err)
        assert int((ref[5] > 0).sum()) == 1 and int((ref[7] > 0).sum()) == 1  # the rows test what they say
        assert 900 < int((ref[0] > 0).sum()) < 1000 and int((ref[3] > 0).sum()) == 50
    # ties straddling the top-p edge: bf16-rounded flat rows, where the edge falls inside a group of equal values
    flat = (torch.randn(64, V, generator=g) * 0.5).bfloat16().float()
    n = flat.shape[0]
    ones, zeros = torch.ones(n), torch.zeros(n)
    args = (flat, torch.zeros(n, V, dtype=torch.int32), ones, ones, zeros, torch.full((n,), 0.9), torch.zeros(n, dtype=torch.long))
    ref = process_logits(flat, None, args[1], zeros, *args[2:])
    out = filtered_probs(*[t.to(dev) for t in args]).cpu()
    assert torch.equal(out > 0, ref > 0), int(((out > 0) != (ref > 0)).sum())
    assert float((out - ref).abs().max()) < 1e-6
    split = sum(int(((flat[b] == flat[b][ref[b] > 0].min()) & (ref[b] == 0)).any()) for b in range(n))
    assert split > 0, "no row had a tie split by the edge: the check would not see the tie rule"
print("ok")
"""


def test_filter_kernel_matches_eager_filters():
    run_kernel_check(FILTER_CHECK)
