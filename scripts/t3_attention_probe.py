"""Where a batched T3 decode step's time goes: the whole captured step (b slots, attention over A positions)
against its 30 layers' attention alone, with the kernels that could do that attention: SDPA as the engine
calls it (additive mask over the bucket), SDPA forced to each backend, and FlashAttention reading each row's
own length from a sequence-major copy of the cache (varlen with seqused_k: no mask, keys past a row's length
are never read).
Usage: python scripts/t3_attention_probe.py CKPT [out.json]"""
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cadence.engine.batch_t3 import BatchDecoder
from cadence.layers import decode_attention
from cadence.layers.decode_attention import launch, prefix_attention
from cadence.tts import TTS
from probe_timing import replay_ms

ck = sys.argv[1]
tts = TTS.from_dir(ck, device="cuda", watermark=False)
t3 = tts.t3
c = t3.cfg
SLOTS, SLOT_LEN = 32, tts.config.kv_slot_len
report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "slots": SLOTS,
                "slot_len": SLOT_LEN, "steps": {}, "attention": {}}


def graph_ms(fn, reps: int = 50) -> float:
    """Median ms of one replay of `fn` captured as a CUDA graph."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return replay_ms(g, reps)


for kernel, min_programs in (("sdpa", 10 ** 9), ("triton", 1)):  # every batch size on one kernel
    decode_attention.MIN_PROGRAMS, keep = min_programs, decode_attention.MIN_PROGRAMS
    dec = BatchDecoder(t3, SLOTS, SLOT_LEN, True)
    dec.hidden.normal_()
    for A in (512, 1024, 1536):
        if A > SLOT_LEN:
            continue
        dec.pos.copy_(torch.randint(A // 3, A, (2 * SLOTS,)))  # rows at lengths spread over the bucket
        for b in (8, 16, 32):
            g = dec._graph((b, A, False, False))
            report["steps"][f"{kernel}_b{b}_A{A}"] = replay_ms(g)
    decode_attention.MIN_PROGRAMS = keep
    del dec
    torch.cuda.empty_cache()
print("steps", report["steps"], flush=True)

rows, H, D, L, dt = 2 * SLOTS, c.n_heads, c.head_dim, c.n_layers, torch.bfloat16
k = torch.randn(L, rows, H, SLOT_LEN, D, device="cuda", dtype=dt)
v = torch.randn_like(k)
ks, vs = k.transpose(2, 3).contiguous(), v.transpose(2, 3).contiguous()  # (L, rows, S, H, D): sequence-major
q = torch.randn(rows, H, 1, D, device="cuda", dtype=dt)
gen = torch.Generator().manual_seed(0)
for A in (512, 1024, 1536):
    if A > SLOT_LEN:
        continue
    lengths = torch.randint(A // 3, A + 1, (rows,), generator=gen).cuda()
    bias = torch.zeros(rows, 1, 1, A, device="cuda", dtype=dt).masked_fill_(
        torch.arange(A, device="cuda")[None, None, None] >= lengths[:, None, None, None], float("-inf"))
    ref = [F.scaled_dot_product_attention(q.float(), k[i, :, :, :A].float(), v[i, :, :, :A].float(),
                                          attn_mask=bias.float()) for i in range(2)]

    def sdpa(backend=None):
        def run():
            for i in range(L):
                F.scaled_dot_product_attention(q, k[i, :, :, :A], v[i, :, :, :A], attn_mask=bias)
        if backend is None:
            return run

        def forced():
            with sdpa_kernel([backend]):
                run()
        return forced

    cu_q = torch.arange(rows + 1, device="cuda", dtype=torch.int32)
    cu_k = cu_q * SLOT_LEN  # row r's keys start at r * S in the (rows * S, H, D) view
    used = lengths.to(torch.int32)

    def flash_varlen(i):
        out = torch.ops.aten._flash_attention_forward(
            q.view(rows, H, D), ks[i].view(-1, H, D), vs[i].view(-1, H, D), cu_q, cu_k, 1, A, 0.0, False, False,
            seqused_k=used)[0]
        return out.view(rows, H, 1, D)

    row = {"mean_length": round(float(lengths.float().mean()), 1)}
    for name, fn in (("sdpa_engine", sdpa()), ("sdpa_cudnn", sdpa(SDPBackend.CUDNN_ATTENTION)),
                     ("sdpa_efficient", sdpa(SDPBackend.EFFICIENT_ATTENTION)),
                     ("flash_varlen", lambda: [flash_varlen(i) for i in range(L)]),
                     *((f"triton_chunk{c}_block{bn}_warps{w}",
                        lambda c=c, bn=bn, w=w: [launch(q, k[i], v[i], used, c, bn, w) for i in range(L)])
                       for c, bn, w in ((0, 64, 4), (0, 128, 8), (128, 64, 4), (256, 64, 4), (256, 128, 4),
                                        (512, 64, 4)))):
        try:
            row[name + "_ms"] = graph_ms(fn)
        except Exception as exc:  # noqa: BLE001 - a kernel this build lacks is a finding, not a failure
            row[name + "_ms"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    try:
        err = max(float((flash_varlen(i).float() - ref[i]).abs().max()) for i in range(2))
        row["flash_varlen_max_err"] = round(err, 5)
        err = max(float((prefix_attention(q, k[i], v[i], used).float() - ref[i]).abs().max()) for i in range(2))
        row["triton_prefix_max_err"] = round(err, 5)
    except Exception as exc:  # noqa: BLE001
        row["flash_varlen_max_err"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    kv_bytes = 2 * L * rows * H * D * 2
    row["kv_gb_bucket"] = round(kv_bytes * A / 1e9, 2)
    row["kv_gb_lengths"] = round(kv_bytes * float(lengths.float().mean()) / 1e9, 2)
    report["attention"][f"A{A}"] = row
    print(A, row, flush=True)
json.dump(report, open(sys.argv[2] if len(sys.argv) > 2 else "/tmp/t3_attention_probe.json", "w"), indent=1)
