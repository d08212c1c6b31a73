"""Cadence's Triton kernels, run on the CPU by Triton's interpreter, against the eager math they replace: the
per-row prefix attention of batched decoding (and its SDPA fallback), and the vocoder's Snake activation."""

import torch
import torch.nn.functional as F

from cadence.layers.decode_attention import PrefixMask, kernel_applies, prefix_attention, prefix_bias
from tests.conftest import run_kernel_check

KERNEL_CHECK = r"""
import torch, torch.nn.functional as F
from cadence.layers.decode_attention import prefix_bias
g = torch.Generator().manual_seed(0)
layers, B, H, S, D = 2, 4, 3, 200, 64
cache_k, cache_v = (torch.randn(layers, B + 2, H, S, D, generator=g) for _ in range(2))
q = torch.randn(B, H, 1, D, generator=g)
for A, lengths in ((192, [1, 64, 65, 192]), (64, [3, 64, 17, 40])):
    L = torch.tensor(lengths, dtype=torch.int32)
    k, v = cache_k[1, :B, :, :A], cache_v[1, :B, :, :A]  # strided views of a layered cache, as in the engine
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=prefix_bias(L, A, q.dtype))
    for chunk in (0, 32, 64, 128, 256):  # one program per row and head; rows split over programs, then combined
        out = torch.ops.cadence.prefix_attention(q, k, v, L, chunk)
        err = float((out - ref).abs().max())
        assert err < 1e-5, (A, chunk, err)
print("ok")
"""


# The voices' shared prompt positions: rows read [0, plen[b]) from their store entry. The rows' own copies there are
# NaN, so any read of them would show; plen 0 (no shared prefix), inside one program's keys, across programs,
# equal to the row's length.
SHARED_CHECK = r"""
import torch, torch.nn.functional as F
from cadence.layers.decode_attention import SharedPrefix, launch, prefix_bias
g = torch.Generator().manual_seed(1)
layers, B, H, S, D, E, P = 2, 21, 2, 300, 64, 3, 140
cache_k, cache_v = (torch.randn(layers, B, H, S, D, generator=g) for _ in range(2))
store_k, store_v = (torch.randn(layers, E, H, P, D, generator=g) for _ in range(2))
q = torch.randn(B, H, 1, D, generator=g)
lengths = torch.randint(141, S + 1, (B,), generator=g, dtype=torch.int32)
entry_len = torch.tensor([140, 70, 131], dtype=torch.int32)
rows = torch.tensor([b % 4 for b in range(B)], dtype=torch.int32)  # entry 3: none (its own keys only)
rows[20] = 0  # entry 0 gets 6 rows: more than one dot of 16 rows would be a stricter test, see below
rows[lengths < 141] = 3
plen = torch.where(rows < 3, entry_len[rows.clamp(max=2).long()], 0).to(torch.int32)
lengths[0] = 140  # a row that is its voice's positions alone
rows = rows.clamp(max=2)
members = torch.zeros(E, 40, dtype=torch.int32)
counts = torch.zeros(E, dtype=torch.int32)
for e in range(E):
    mine = [b for b in range(B) if plen[b] > 0 and rows[b] == e] + [B + 5] * (e == 1)  # a member past the step
    members[e, : len(mine)] = torch.tensor(mine, dtype=torch.int32)
    counts[e] = len(mine)
k, v = cache_k[1].clone(), cache_v[1].clone()
for b in range(B):  # what the fallback reads: the store's values copied in
    k[b, :, :plen[b]] = store_k[1, rows[b], :, :plen[b]]
    v[b, :, :plen[b]] = store_v[1, rows[b], :, :plen[b]]
ref = F.scaled_dot_product_attention(q, k, v, attn_mask=prefix_bias(lengths, S, q.dtype))
for b in range(B):  # the kernels must not read them
    k[b, :, :plen[b]] = float("nan")
    v[b, :, :plen[b]] = float("nan")
shared = SharedPrefix(store_k, store_v, rows, plen, members, counts, entry_len).layer(1)
for chunk in (64, 128, 256):
    out = torch.ops.cadence.shared_prefix_attention(q, k, v, lengths, chunk, *shared)
    err = float((out - ref).abs().max())
    assert err < 1e-4, (chunk, err)
# 40 rows of one voice: three dots of 16 rows in one program
B2 = 40
q2 = torch.randn(B2, H, 1, D, generator=g)
k2, v2 = (torch.randn(B2, H, S, D, generator=g) for _ in range(2))
len2 = torch.full((B2,), 250, dtype=torch.int32)
rows2, plen2 = torch.zeros(B2, dtype=torch.int32), torch.full((B2,), 140, dtype=torch.int32)
k2[:, :, :140], v2[:, :, :140] = store_k[0, 0, :, :140], store_v[0, 0, :, :140]
ref2 = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=prefix_bias(len2, S, q2.dtype))
m2 = torch.arange(B2, dtype=torch.int32)[None].repeat(E, 1)
c2 = torch.tensor([B2, 0, 0], dtype=torch.int32)
out2 = launch(q2, k2, v2, len2, 256, shared=SharedPrefix(store_k[0], store_v[0], rows2, plen2, m2, c2, entry_len))
assert float((out2 - ref2).abs().max()) < 1e-4
print("ok")
"""


SNAKE_CHECK = r"""
import torch
from cadence.layers.snake import snake
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 5, 3000, generator=g) * 3
alpha = torch.rand(5, generator=g) + 0.2
mask = (torch.arange(3000)[None] < torch.tensor([[3000], [1234]])).float()[:, None]  # (2, 1, T)
for m in (None, mask):
    out, ref = torch.ops.cadence.snake(x, alpha, m), snake(x, alpha, m)  # kernel; eager (CPU tensors)
    err = float((out - ref).abs().max())
    assert err < 1e-5, err
assert float(torch.ops.cadence.snake(x, alpha, mask)[1, :, 1234:].abs().max()) == 0.0  # Snake keeps 0 at 0
print("ok")
"""

# The decode step's fused linears (LayerNorm prologue, bias, GELU, residual epilogue) against the eager math, in
# fp32, which the interpreter can multiply.
DECODE_LINEAR_CHECK = r"""
import torch, torch.nn.functional as F
from cadence.layers.decode_linear import launch
g = torch.Generator().manual_seed(0)
for K, N in ((96, 40), (1024, 33), (300, 20)):  # K a power of two or not, N a multiple of the rows per program or not
    x = torch.randn(1, K, generator=g); w = torch.randn(N, K, generator=g) / K ** 0.5; b = torch.randn(N, generator=g)
    lw, lb = torch.randn(K, generator=g), torch.randn(K, generator=g); r = torch.randn(1, N, generator=g)
    ref = F.gelu(F.linear(F.layer_norm(x, (K,), lw, lb, 1e-5), w, b), approximate="tanh")
    e1 = float((launch(x, w, b, (lw, lb, 1e-5), True) - ref).abs().max())
    e2 = float((launch(x, w, b, residual=r) - (r + F.linear(x, w, b))).abs().max())
    assert e1 < 1e-4 and e2 < 1e-4, (K, N, e1, e2)
print("ok")
"""

# The Llama T3's fused decode linears (RMSNorm prologue; SiLU gating or the residual epilogue), one or two rows,
# against the eager math in fp32.
LLAMA_LINEAR_CHECK = r"""
import torch, torch.nn.functional as F
from cadence.layers.llama_decode import launch
g = torch.Generator().manual_seed(0)
for M, K, N in ((1, 96, 40), (2, 1024, 33), (2, 300, 20)):  # K a power of two or not, N a multiple of the block or not
    x = torch.randn(M, K, generator=g); w = torch.randn(N, K, generator=g) / K ** 0.5
    nw = torch.randn(K, generator=g); r = torch.randn(M, N, generator=g)
    xn = F.rms_norm(x, (K,), nw, 1e-5)
    e1 = float((launch(x, w, (nw, 1e-5)) - F.linear(xn, w)).abs().max())
    gate, up = F.linear(xn, w[: N // 2 * 2]).chunk(2, dim=-1)
    e2 = float((launch(x, w[: N // 2 * 2], (nw, 1e-5), gated=True) - F.silu(gate) * up).abs().max())
    e3 = float((launch(x, w, residual=r) - (r + F.linear(x, w))).abs().max())
    assert e1 < 1e-4 and e2 < 1e-4 and e3 < 1e-4, (M, K, N, e1, e2, e3)
print("ok")
"""

# A decode step's keys and values written in one kernel, a shared position or one per row, into a layer of a
# layered cache from strided views of c_attn's output.
KV_WRITE_CHECK = r"""
import torch
from cadence.layers.kv_write import launch
g = torch.Generator().manual_seed(0)
B, H, S, D = 3, 4, 20, 16
qkv = torch.randn(B, 3 * H, 1, D, generator=g)
k, v = qkv[:, H:2*H], qkv[:, 2*H:]
for pos in (torch.tensor([7]), torch.tensor([[1], [5], [19]])):
    kc, vc = torch.zeros(2, B, H, S, D), torch.zeros(2, B, H, S, D)
    launch(k, v, kc[1], vc[1], pos)
    rk, rv = torch.zeros(B, H, S, D), torch.zeros(B, H, S, D)
    for b in range(B):
        p = int(pos.view(-1)[b if pos.dim() == 2 else 0])
        rk[b, :, p], rv[b, :, p] = k[b, :, 0], v[b, :, 0]
    assert torch.equal(kc[1], rk) and torch.equal(vc[1], rv) and not kc[0].any()
print("ok")
"""

# The Llama decode step's rotary embedding and KV write in one kernel against the eager rotation (fp32), a shared
# position (a CFG pair) or one per row (a batch), into a layer of a layered cache.
ROTARY_KV_CHECK = r"""
import torch
from cadence.layers.rotary_kv import launch
from cadence.models.t3 import apply_rotary, rotary_freqs
g = torch.Generator().manual_seed(0)
B, H, S, D = 3, 4, 20, 16
inv = 1.0 / (500000.0 ** (torch.arange(0, D, 2).float() / D))
qkv = torch.randn(B, 1, 3 * H * D, generator=g)
heads = qkv.view(B, 1, 3 * H, D).transpose(1, 2)  # (B, 3H, 1, D)
for pos in (torch.tensor([7]), torch.tensor([[1], [5], [19]])):
    freqs = rotary_freqs(inv, pos)
    kc, vc = torch.zeros(2, B, H, S, D), torch.zeros(2, B, H, S, D)
    q = launch(qkv, torch.view_as_real(freqs).reshape(-1, D // 2, 2), kc[1], vc[1], pos)
    qk = apply_rotary(heads[:, : 2 * H], freqs)
    assert float((q - qk[:, :H]).abs().max()) < 1e-5
    rk, rv = torch.zeros(B, H, S, D), torch.zeros(B, H, S, D)
    for b in range(B):
        p = int(pos.view(-1)[b if pos.dim() == 2 else 0])
        rk[b, :, p], rv[b, :, p] = qk[b, H:, 0], heads[b, 2 * H:, 0]
    assert float((kc[1] - rk).abs().max()) < 1e-5 and torch.equal(vc[1], rv) and not kc[0].any()
print("ok")
"""

# The sampling noise: the Triton kernel draws the same integers as the torch form (equal to float rounding after
# the logarithm), for full 63-bit seeds and rows of one batch at different steps.
RACE_NOISE_CHECK = r"""
import torch
from cadence.layers.race_noise import _race_noise_kernel, race_noise_torch
seeds = torch.tensor([0, 1, 2 ** 63 - 1, 123456789012345, 7], dtype=torch.long)
steps = torch.tensor([0, 0, 999, 5, 6], dtype=torch.long)
for V in (8194, 100):
    out = torch.empty(5, V)
    _race_noise_kernel[(5, (V + 1023) // 1024)](out, seeds, steps, V, BLOCK=1024)
    err = float(((out - race_noise_torch(seeds, steps, V)).abs() / out).max())
    assert err < 1e-5, (V, err)
print("ok")
"""


def test_prefix_attention_kernel_equals_masked_sdpa_in_the_interpreter():
    run_kernel_check(KERNEL_CHECK)


def test_shared_prompt_positions_come_from_the_store_in_the_interpreter():
    run_kernel_check(SHARED_CHECK)


def test_snake_kernel_equals_eager_snake_in_the_interpreter():
    run_kernel_check(SNAKE_CHECK)


def test_decode_linear_kernels_equal_the_eager_math_in_the_interpreter():
    run_kernel_check(DECODE_LINEAR_CHECK)


def test_llama_decode_linears_equal_the_eager_math_in_the_interpreter():
    run_kernel_check(LLAMA_LINEAR_CHECK)


def test_kv_write_kernel_equals_index_copies_in_the_interpreter():
    run_kernel_check(KV_WRITE_CHECK)


def test_rotary_kv_kernel_equals_the_eager_rotation_and_write_in_the_interpreter():
    run_kernel_check(ROTARY_KV_CHECK)


def test_race_noise_kernel_equals_the_torch_draws_in_the_interpreter():
    run_kernel_check(RACE_NOISE_CHECK)


def test_fallback_equals_the_bool_mask_it_replaces():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(3, 2, 1, 16, generator=g)
    k, v = torch.randn(3, 2, 40, 16, generator=g), torch.randn(3, 2, 40, 16, generator=g)
    pos = torch.tensor([0, 17, 39])
    old = torch.arange(40)[None] <= pos[:, None]  # what BatchDecoder built before: positions up to each row's own
    bias = torch.zeros(3, 1, 1, 40).masked_fill_(~old[:, None, None], float("-inf"))
    mask = PrefixMask((pos + 1).to(torch.int32), 40)
    assert not kernel_applies(q.shape, q.device, q.dtype)  # CPU: SDPA
    assert torch.equal(prefix_attention(q, k, v, mask.lengths), F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
