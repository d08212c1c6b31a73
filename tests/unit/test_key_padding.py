"""`KeyPadding`'s two forms of one padded batch: the additive bias and the variable-length segments describe the
same attention (checked on the CPU by attending segment by segment, as the variable-length kernel does)."""

import torch

from cadence.layers.key_padding import key_padding, padded_attention


def _segment_attention(q, k, v, cu_q, cu_k):
    """What variable-length attention computes: q, k, v (N, H, D) packed, segment s's queries over its own keys."""
    out = torch.zeros_like(q)
    for s in range(len(cu_q) - 1):
        qs, ks = slice(int(cu_q[s]), int(cu_q[s + 1])), slice(int(cu_k[s]), int(cu_k[s + 1]))
        if qs.stop > qs.start:
            scores = torch.einsum("qhd,khd->hqk", q[qs], k[ks]) * q.shape[-1] ** -0.5
            out[qs] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v[ks])
    return out


def test_segments_hold_each_rows_real_keys_and_every_query():
    mask = torch.zeros(3, 1, 5)
    mask[0, :, :5], mask[1, :, :2], mask[2, :, :4] = 1, 1, 1
    padding = key_padding(mask, torch.float32)
    assert padding.cu_q.tolist() == [0, 5, 5, 10, 10, 15, 15]  # row b's 5 queries, then an empty segment
    assert padding.cu_k.tolist() == [0, 5, 5, 7, 10, 14, 15]  # row b's real keys, then its padded ones
    assert padding.cu_q.dtype == padding.cu_k.dtype == torch.int32
    assert padding.bias.shape == (3, 1, 1, 5) and padding.bias[1, 0, 0, 2:].max() <= -1e9
    assert padding.bias[1, 0, 0, :2].abs().max() == 0


def test_segments_count_long_rows_exactly_in_half_precision():
    """The estimator's masks are in the flow's dtype: bf16 holds integers exactly only up to 256."""
    mask = torch.zeros(3, 1, 900, dtype=torch.bfloat16)
    mask[0, :, :837], mask[1, :, :601], mask[2] = 1, 1, 1
    padding = key_padding(mask, torch.bfloat16)
    assert padding.cu_k.tolist() == [0, 837, 900, 1501, 1800, 2700, 2700]


def test_segments_and_bias_give_the_same_attention():
    torch.manual_seed(0)
    B, H, T, D = 3, 4, 12, 16
    q, k, v = (torch.randn(B, T, H, D) for _ in range(3))  # as the estimator lays them out: (B, T, H * D)
    mask = torch.ones(B, 1, T)
    mask[1, :, 7:] = 0
    mask[2, :, 1:] = 0
    padding = key_padding(mask, torch.float32)
    want = padded_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), padding)  # the bias form
    packed = [t.reshape(B * T, H, D) for t in (q, k, v)]
    got = _segment_attention(*packed, padding.cu_q, padding.cu_k).view(B, T, H, D).transpose(1, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # padded queries included
