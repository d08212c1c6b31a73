"""What torch.compile (Inductor: fused elementwise and norm kernels) would give S3Gen's one-piece batches: the
CFM estimator and the HiFT vocoder compiled with dynamic shapes against eager, for a batch of the serve bench's
lengths (compile time, first call at new lengths, warm time, largest difference from eager); and the estimator's
attention shape under each kernel (cuDNN with the key-padding bias as today, without it, FlashAttention
varlen reading each row's own length).
Usage: python scripts/s3gen_compile_probe.py CKPT [out.json]"""
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cadence.engine.rng import RequestRNG
from cadence.tts import TTS
from probe_timing import median_ms

sync = torch.cuda.synchronize
tts = TTS.from_dir(sys.argv[1], device="cuda", watermark=False)
runner, voice, flow, hift = tts.audio_runner, tts.default_voice, tts.s3gen.flow, tts.s3gen.mel2wav
report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                "flash_schema": str(torch.ops.aten._flash_attention_forward.default._schema)}


def batch(seed: int, B: int):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(75, 751, (B,), generator=gen).tolist()
    return [(torch.randint(0, 6561, (n,), generator=gen), voice, RequestRNG(i, "cuda")) for i, n in enumerate(lengths)]


def rel(a: list, b: list) -> float:
    return max(float((x - y).norm() / y.norm()) for x, y in zip(a, b))


items, other = batch(0, 16), batch(1, 12)
eager = {"flow_ms": median_ms(lambda: runner.mel_batch(items), sync)}
mels = runner.mel_batch(items)
rngs = [it[2] for it in items]
eager["vocoder_ms"] = median_ms(lambda: runner.vocode_batch(mels, rngs), sync)
waves = runner.vocode_batch(mels, rngs)
report["eager"] = eager
print("eager", eager, flush=True)

est = flow.decoder.estimator
t0 = time.perf_counter()
est.compile(dynamic=True)
comp = {}
mels_c = runner.mel_batch(items)
sync()
comp["flow_first_call_s"] = round(time.perf_counter() - t0, 1)
comp["flow_ms"] = median_ms(lambda: runner.mel_batch(items), sync)
comp["flow_rel_diff"] = round(rel(runner.mel_batch(items), mels), 5)
t0 = time.perf_counter()
runner.mel_batch(other)
sync()
comp["flow_other_batch_first_s"] = round(time.perf_counter() - t0, 2)
print("compiled flow", comp, flush=True)
t0 = time.perf_counter()
hift.compile(dynamic=True)
runner.vocode_batch(mels, rngs)
sync()
comp["vocoder_first_call_s"] = round(time.perf_counter() - t0, 1)
comp["vocoder_ms"] = median_ms(lambda: runner.vocode_batch(mels, rngs), sync)
comp["vocoder_rel_diff"] = round(rel(runner.vocode_batch(mels, rngs), waves), 5)
report["compiled"] = comp
print("compiled", comp, flush=True)


def graph_ms(fn, reps: int = 20) -> float:
    fn()
    sync()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return round(sorted(out)[reps // 2], 3)


rows, H, T, D = 32, 8, 1408, 64
lengths = torch.randint(T - 200, T + 1, (rows,), device="cuda")
q, k, v = (torch.randn(rows, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
bias = torch.zeros(rows, 1, 1, T, device="cuda", dtype=torch.bfloat16).masked_fill_(
    torch.arange(T, device="cuda")[None, None, None] >= lengths[:, None, None, None], -1.0e10)
qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
starts = torch.arange(0, (rows + 1) * T, T, device="cuda", dtype=torch.int32)
att = {}
ref = F.scaled_dot_product_attention(qh.float(), kh.float(), vh.float(), attn_mask=bias.float())


def varlen():
    return torch.ops.aten._flash_attention_forward(q.view(-1, H, D), k.view(-1, H, D), v.view(-1, H, D), starts,
                                                   starts, T, T, 0.0, False, False,
                                                   seqused_k=lengths.to(torch.int32))[0].view(rows, T, H, D)


def _forced(backend, masked=True):
    with sdpa_kernel([backend]):
        return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias if masked else None)


for name, fn in (("cudnn_bias", lambda: F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias)),
                 ("cudnn_nobias", lambda: F.scaled_dot_product_attention(qh, kh, vh)),
                 ("efficient_bias", lambda: _forced(SDPBackend.EFFICIENT_ATTENTION)),
                 ("flash_nobias", lambda: _forced(SDPBackend.FLASH_ATTENTION, False)),
                 ("flash_varlen_seqused", varlen)):
    try:
        att[name + "_ms"] = graph_ms(lambda: [fn() for _ in range(56)])
    except Exception as exc:  # noqa: BLE001 - a kernel this build lacks is a finding
        att[name + "_ms"] = f"{type(exc).__name__}: {str(exc)[:160]}"
try:
    out = varlen().transpose(1, 2).float()
    att["varlen_rel_err"] = round(float((out - ref).norm() / ref.norm()), 5)
except Exception as exc:  # noqa: BLE001
    att["varlen_rel_err"] = str(exc)[:160]
report["attention_56_calls"] = att
print("attention x56", att, flush=True)
json.dump(report, open(sys.argv[2] if len(sys.argv) > 2 else "/tmp/s3gen_compile_probe.json", "w"), indent=1)
