"""The voices' shared prompt keys on CUDA (skipped without CUDA): the cascade attention (a voice's keys read once
for all its rows, merged with each row's own) against fp32 attention over the rows' whole caches; a batched decoder
in CUDA graphs gives the same greedy tokens whether its steps read the store or the rows' copies."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from cadence.layers import decode_attention
from cadence.layers.decode_attention import SharedPrefix, prefix_attention, prefix_bias

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("chunk", [32, 256])
def test_cascade_reads_the_store_and_matches_attention_over_the_rows_caches(chunk):
    g = torch.Generator(device="cuda").manual_seed(0)
    bf = dict(device="cuda", dtype=torch.bfloat16)
    B, H, S, D, E, P = 48, 16, 1024, 64, 3, 376
    k, v = (torch.randn(B, H, S, D, generator=g, **bf) for _ in range(2))
    store_k, store_v = (torch.randn(E, H, P, D, generator=g, **bf) for _ in range(2))
    q = torch.randn(B, H, 1, D, generator=g, **bf)
    lengths = torch.randint(P + 1, S + 1, (B,), generator=g, device="cuda", dtype=torch.int32)
    rows = torch.randint(0, E, (B,), generator=g, device="cuda", dtype=torch.int32)
    entry_len = torch.tensor([P, 251, 100], device="cuda", dtype=torch.int32)
    plen = entry_len[rows.long()].clone()
    plen[::5] = 0  # some rows without a shared prompt
    members = torch.zeros(E, B, device="cuda", dtype=torch.int32)
    counts = torch.zeros(E, device="cuda", dtype=torch.int32)
    for e in range(E):
        mine = [b for b in range(B) if plen[b] > 0 and rows[b] == e]
        members[e, : len(mine)] = torch.tensor(mine, device="cuda", dtype=torch.int32)
        counts[e] = len(mine)
    for b in range(B):
        k[b, :, : plen[b]] = store_k[rows[b], :, : plen[b]]
        v[b, :, : plen[b]] = store_v[rows[b], :, : plen[b]]
    own = prefix_attention(q, k, v, lengths, chunk)
    bias = prefix_bias(lengths, S, torch.float32)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias)
    for b in range(B):  # were the kernels to read the rows' copies, NaN would show
        k[b, :, : plen[b]] = float("nan")
        v[b, :, : plen[b]] = float("nan")
    shared = prefix_attention(q, k, v, lengths, chunk, SharedPrefix(store_k, store_v, rows, plen, members, counts,
                                                                    entry_len))
    assert not shared.isnan().any()
    assert (shared.float() - want).abs().max() < 2e-2 and (own.float() - want).abs().max() < 2e-2
    assert (shared.float() - own.float()).abs().max() < 2e-2


def test_graph_decoder_gives_the_same_tokens_reading_the_store(monkeypatch):
    from cadence.engine.batch_t3 import BatchDecoder
    from cadence.family import TURBO
    from cadence.models.t3_turbo import T3Turbo, T3TurboConfig
    from cadence.sampling_params import SamplingParams
    from cadence.engine import batch_t3
    monkeypatch.setattr(decode_attention, "MIN_PROGRAMS", 1)  # the kernel at any batch size
    monkeypatch.setattr(batch_t3, "CASCADE_MIN_ROWS", 1)  # and the cascade
    torch.manual_seed(0)
    cfg = T3TurboConfig(dim=256, n_layers=2, n_heads=4, ffn_dim=512, n_positions=1024, max_speech_tokens=512,
                        max_text_tokens=256, prompt_len=120)
    t3 = T3Turbo(cfg).to("cuda", torch.bfloat16).eval()
    voices = [(f"v{i}", torch.randn(1, 1 + 120 - 30 * i, cfg.dim, device="cuda")) for i in range(3)]
    prompts = [torch.cat((voices[i % 3][1], torch.randn(1, 20 + 7 * i, cfg.dim, device="cuda")), dim=1)
               for i in range(8)]
    params = replace(SamplingParams.for_family(TURBO), top_k=1)  # greedy: rounding rarely changes a token

    def run(read_store: bool):
        dec = BatchDecoder(t3, slots=8, slot_len=512, use_graphs=True, rows_per_slot=1, shared_voices=2)
        if not read_store:  # the rows' own copies, which hold the store's values
            dec.prompts.for_rows = lambda rows: None
        dec.admit_many([(s, p, replace(params, seed=s), True, True, None, voices[s % 3])
                        for s, p in enumerate(prompts)])
        dec.run_step(8, 512, True, True)
        first = dec.hidden.float().clone()
        for _ in range(39):
            dec.run_step(8, 512, True, True)
        torch.cuda.synchronize()
        return dec.out[:, :40].clone(), first, dec.prompts.row_len.clone()

    tokens, hidden, row_len = run(True)
    tokens_own, hidden_own, _ = run(False)
    assert sorted(set(row_len.tolist())) == [0, 91, 121]  # two entries held, the third voice reads its own
    assert (hidden - hidden_own).abs().max() <= 2e-2 * hidden_own.abs().max()
    assert (tokens == tokens_own).float().mean() >= 0.9 and torch.equal(tokens[:, :5], tokens_own[:, :5])
