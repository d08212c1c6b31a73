"""The voices' shared prompt keys on CUDA (skipped without CUDA): the decode kernel reads a row's first positions
from the store, bit for bit what it computes from the row's own copy; a batched decoder in CUDA graphs gives the
same tokens and hidden states whether its steps read the store or the rows' copies."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from cadence.layers import decode_attention
from cadence.layers.decode_attention import SharedPrefix, prefix_attention, prefix_bias

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("chunk", [0, 32, 256])
def test_kernel_reads_the_store_and_matches_the_rows_own_copy_exactly(chunk):
    g = torch.Generator(device="cuda").manual_seed(0)
    bf = dict(device="cuda", dtype=torch.bfloat16)
    B, H, S, D, E, P = 24, 16, 1024, 64, 3, 376
    k, v = (torch.randn(B, H, S, D, generator=g, **bf) for _ in range(2))
    store_k, store_v = (torch.randn(E, H, P, D, generator=g, **bf) for _ in range(2))
    q = torch.randn(B, H, 1, D, generator=g, **bf)
    lengths = torch.randint(P + 1, S + 1, (B,), generator=g, device="cuda", dtype=torch.int32)
    rows = torch.randint(0, E, (B,), generator=g, device="cuda", dtype=torch.int32)
    plen = torch.full((B,), P, device="cuda", dtype=torch.int32)
    plen[::5] = 0  # some rows without a shared prompt
    for b in range(B):
        k[b, :, : plen[b]] = store_k[rows[b], :, : plen[b]]
        v[b, :, : plen[b]] = store_v[rows[b], :, : plen[b]]
    own = prefix_attention(q, k, v, lengths, chunk)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=prefix_bias(lengths, S, torch.float32))
    for b in range(B):  # were the kernel to read the rows' copies, NaN would show
        k[b, :, : plen[b]] = float("nan")
        v[b, :, : plen[b]] = float("nan")
    shared = prefix_attention(q, k, v, lengths, chunk, SharedPrefix(store_k, store_v, rows, plen))
    assert torch.equal(shared, own)
    assert (shared.float() - want).abs().max() < 2e-2


def test_graph_decoder_gives_the_same_tokens_reading_the_store(monkeypatch):
    from cadence.engine.batch_t3 import BatchDecoder
    from cadence.family import TURBO
    from cadence.models.t3_turbo import T3Turbo, T3TurboConfig
    from cadence.sampling_params import SamplingParams
    monkeypatch.setattr(decode_attention, "MIN_PROGRAMS", 1)  # the kernel at any batch size
    torch.manual_seed(0)
    cfg = T3TurboConfig(dim=256, n_layers=2, n_heads=4, ffn_dim=512, n_positions=1024, max_speech_tokens=512,
                        max_text_tokens=256, prompt_len=120)
    t3 = T3Turbo(cfg).to("cuda", torch.bfloat16).eval()
    voices = [(f"v{i}", torch.randn(1, 1 + 120 - 30 * i, cfg.dim, device="cuda")) for i in range(3)]
    prompts = [torch.cat((voices[i % 3][1], torch.randn(1, 20 + 7 * i, cfg.dim, device="cuda")), dim=1)
               for i in range(8)]
    params = SamplingParams.for_family(TURBO)

    def run(read_store: bool):
        dec = BatchDecoder(t3, slots=8, slot_len=512, use_graphs=True, rows_per_slot=1, shared_voices=2)
        if not read_store:  # the rows' own copies, which hold the store's values
            dec.prompts.for_rows = lambda rows: None
        dec.admit_many([(s, p, replace(params, seed=s), True, True, None, voices[s % 3])
                        for s, p in enumerate(prompts)])
        for _ in range(40):
            dec.run_step(8, 512, True, True)
        torch.cuda.synchronize()
        return dec.out[:, :40].clone(), dec.hidden.clone(), dec.prompts.row_len.clone()

    tokens, hidden, row_len = run(True)
    tokens_own, hidden_own, _ = run(False)
    assert sorted(set(row_len.tolist())) == [0, 91, 121]  # two entries held, the third voice reads its own
    assert torch.equal(tokens, tokens_own) and torch.equal(hidden, hidden_own)
