"""One-query attention over each row's own prefix of a KV cache, for batched decoding.

A batched decode step attends every row over the same span of cache positions (the longest row's, rounded up
to a captured bucket) with the shorter rows' tail masked. cuDNN's kernel reads that whole span at ~2.9 TB/s on
an H100, so a batch of requests at different lengths pays for the longest one's keys on every row (measured:
b = 32, span 1024, mean length 676: 8.05 GB read where 5.32 GB are real). This Triton kernel stops each row at
its own length: each (row, head) walks its keys, contiguous in the (rows, heads, positions, dim) cache, in
programs of CHUNK keys with an online softmax in fp32, and a second kernel combines a row's programs. Where
Triton or CUDA is missing, or a batch has too few (row, head) pairs for the kernel to beat cuDNN
(MIN_PROGRAMS), the same result comes from SDPA with an additive mask.

Requests with one voice begin with the same prompt positions (Turbo: the speaker token and up to 375 prompt
speech tokens, more than half of a 300-token request's keys). With a `SharedPrefix` each row's keys are read
from after its voice's, whose share `cascade_attention` computes once per voice for all its rows, and the
combine kernel merges both. The rows' own caches hold the same values there (the engine copies them in at
admission), so the SDPA fallback computes the same attention."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .attention import attention
from .kernel_op import kernel_op

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of torch
    triton = None

MIN_PROGRAMS = 256  # (row, head) pairs below which cuDNN's kernel wins (H100: from b = 8 slots the split kernel gains)
CHUNK = 256  # keys per program when a row is split over several programs (0: one program per row and head)


class SharedPrefix(NamedTuple):
    """The voices' prompt positions, kept once per voice (`engine.shared_prompts.SharedPrompts`): row b's first
    lengths[b] positions are those of entry rows[b] of the store k, v ((layers, entries, H, P, D) as the backbone
    takes it; (entries, H, P, D) once `layer` picked one layer's); lengths[b] = 0: none. members (entries, R) lists
    each entry's rows (its first counts[e]), entry_lengths (entries,) its positions: the cascade kernel reads an
    entry's keys once for all its rows (`cascade_attention`). All int32."""
    k: torch.Tensor
    v: torch.Tensor
    rows: torch.Tensor
    lengths: torch.Tensor
    members: torch.Tensor
    counts: torch.Tensor
    entry_lengths: torch.Tensor

    def layer(self, i: int) -> "SharedPrefix":
        return self._replace(k=self.k[i], v=self.v[i])


class PrefixMask(NamedTuple):
    """Row b of a decode step attends to cache positions [0, lengths[b]) of the first `span` (lengths (B,) int32).
    `chunk` > 0 asks for the kernel with rows split in programs of that many keys whatever the batch's size (a
    one- or two-row step: few (row, head) pairs, so many splits keep the GPU busy); 0 leaves the choice to
    `kernel_applies` (the kernel from MIN_PROGRAMS pairs on, in programs of CHUNK keys). `shared`: the voices'
    prompt positions, read by the kernel from one copy per voice (the SDPA fallback reads the rows' own)."""
    lengths: torch.Tensor
    span: int
    chunk: int = 0
    shared: SharedPrefix | None = None


class RowLengths(NamedTuple):
    """A `PrefixMask` as the layers take it when the kernel runs: the lengths alone (the kernel reads no further),
    so torch.compile has no span to specialise on and one compile serves every bucket; `chunk` and `shared` as
    `PrefixMask`'s (`for_layer` gives each layer its own slice of the shared store)."""
    lengths: torch.Tensor
    chunk: int = 0
    shared: SharedPrefix | None = None


if triton is not None:
    @triton.jit
    def _prefix_attention_kernel(q_ptr, k_ptr, v_ptr, out_ptr, part_ptr, len_ptr, start_ptr, n_heads, scale,
                                 s_qb, s_qh, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh,
                                 HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
                                 START: tl.constexpr):
        """Program (row * heads + head, split): keys [split * CHUNK, ...) of that row's prefix (all of it when
        CHUNK is 0). Unsplit, it writes the output; split, its max, denominator and accumulator go to part_ptr
        ((rows * heads, splits, HEAD_DIM + 2) fp32) for `_combine_kernel`. START: row b's keys begin at
        start[b] (those before are its voice's, which `cascade_attention` reads once per voice); a split wholly
        before it holds max -inf."""
        pid, split = tl.program_id(0), tl.program_id(1)
        b, h = pid // n_heads, pid % n_heads
        n_keys = tl.load(len_ptr + b)
        lo = split * CHUNK
        hi = tl.minimum(lo + CHUNK, n_keys) if CHUNK > 0 else n_keys
        if START:
            lo = tl.maximum(lo, tl.load(start_ptr + b))
        d = tl.arange(0, HEAD_DIM)
        q = tl.load(q_ptr + b * s_qb + h * s_qh + d).to(tl.float32) * scale
        k_row = k_ptr + b * s_kb + h * s_kh
        v_row = v_ptr + b * s_vb + h * s_vh
        m = tl.max(tl.full((BLOCK_N,), float("-inf"), tl.float32), 0)  # running max, as a scalar tensor
        denom = tl.sum(tl.zeros((BLOCK_N,), tl.float32), 0)
        acc = tl.zeros((HEAD_DIM,), tl.float32)
        for start in range(lo, hi, BLOCK_N):
            n = start + tl.arange(0, BLOCK_N)
            live = n < hi
            k = tl.load(k_row + n[:, None] * s_kn + d[None, :], mask=live[:, None], other=0.0).to(tl.float32)
            s = tl.where(live, tl.sum(k * q[None, :], 1), float("-inf"))  # (BLOCK_N,)
            m_new = tl.maximum(m, tl.max(s, 0))
            p = tl.exp(s - m_new)
            rescale = tl.exp(m - m_new)
            v = tl.load(v_row + n[:, None] * s_vn + d[None, :], mask=live[:, None], other=0.0).to(tl.float32)
            acc = acc * rescale + tl.sum(p[:, None] * v, 0)
            denom = denom * rescale + tl.sum(p, 0)
            m = m_new
        if CHUNK > 0:
            part = part_ptr + (pid * tl.num_programs(1) + split) * (HEAD_DIM + 2)
            tl.store(part + d, acc)
            tl.store(part + HEAD_DIM, m)
            tl.store(part + HEAD_DIM + 1, denom)
        else:
            tl.store(out_ptr + b * s_ob + h * s_oh + d, (acc / denom).to(out_ptr.dtype.element_ty))

    @triton.jit
    def _combine_kernel(part_ptr, out_ptr, n_heads, n_splits, s_ob, s_oh, vpart_ptr, plen_ptr, n_vsplits,
                        HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr, VSPLITS: tl.constexpr):
        """out[row, head] from its splits' partial softmaxes (a split past the row's length holds max -inf), and,
        where the row has a voice's positions (plen[b] > 0; VSPLITS > 0), the voice's blocks' partials in vpart
        ((rows * heads, voice blocks, HEAD_DIM + 2), `cascade_attention`)."""
        pid = tl.program_id(0)
        b, h = pid // n_heads, pid % n_heads
        j = tl.arange(0, SPLITS)
        live = j < n_splits
        d = tl.arange(0, HEAD_DIM)
        part = part_ptr + (pid * n_splits + j) * (HEAD_DIM + 2)
        m = tl.load(part + HEAD_DIM, mask=live, other=float("-inf"))
        denom = tl.load(part + HEAD_DIM + 1, mask=live, other=0.0)
        acc = tl.load(part[:, None] + d[None, :], mask=live[:, None], other=0.0)
        m_all = tl.max(m, 0)
        if VSPLITS > 0:
            jv = tl.arange(0, VSPLITS)
            vlive = jv < tl.where(tl.load(plen_ptr + b) > 0, n_vsplits, 0)  # rows without a voice: none
            vpart = vpart_ptr + (pid * n_vsplits + jv) * (HEAD_DIM + 2)
            vm = tl.load(vpart + HEAD_DIM, mask=vlive, other=float("-inf"))
            vdenom = tl.load(vpart + HEAD_DIM + 1, mask=vlive, other=0.0)
            vacc = tl.load(vpart[:, None] + d[None, :], mask=vlive[:, None], other=0.0)
            m_all = tl.maximum(m_all, tl.max(vm, 0))
        w = tl.exp(m - m_all)  # some split holds a key: the max is finite
        num = tl.sum(w[:, None] * acc, 0)
        den = tl.sum(w * denom, 0)
        if VSPLITS > 0:
            vw = tl.exp(vm - m_all)
            num += tl.sum(vw[:, None] * vacc, 0)
            den += tl.sum(vw * vdenom, 0)
        tl.store(out_ptr + b * s_ob + h * s_oh + d, (num / den).to(out_ptr.dtype.element_ty))


def kernel_applies(shape: tuple, device: torch.device, dtype: torch.dtype, any_size: bool = False) -> bool:
    """Whether `prefix_attention` runs the Triton kernel for queries of `shape` (B, H, 1, D) (else SDPA);
    `any_size`: whatever the number of (row, head) pairs (a split `PrefixMask`)."""
    B, H, T, D = shape
    return (triton is not None and device.type == "cuda" and T == 1 and (any_size or B * H >= MIN_PROGRAMS)
            and D in (32, 64, 128) and dtype in (torch.float16, torch.bfloat16, torch.float32))


def prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                     chunk: int = 0, shared: SharedPrefix | None = None) -> torch.Tensor:
    """q (B, H, 1, D); k, v (B, H, S, D) caches (any strides, D contiguous); lengths (B,) int32: row b attends to
    positions [0, lengths[b]), 1 <= lengths[b] <= S -> (B, H, 1, D). `chunk` > 0: the kernel in programs of that
    many keys whatever the batch's size; 0: the kernel from MIN_PROGRAMS (row, head) pairs on, in programs of CHUNK.
    `shared` (one layer's store): the rows' voice positions read once per voice (`cascade_attention`); the caller
    keeps the same values in the rows' own caches, which the SDPA fallback reads."""
    if not kernel_applies(q.shape, q.device, q.dtype, any_size=chunk > 0):
        return attention(q, k, v, prefix_bias(lengths, k.shape[2], q.dtype))
    if shared is not None:
        return _shared_prefix_attention_op(q, k, v, lengths, chunk or CHUNK, *shared)
    return _prefix_attention_op(q, k, v, lengths, chunk or CHUNK)


def launch(q, k, v, lengths, chunk: int, block_n: int = 128, num_warps: int = 4,
           shared: SharedPrefix | None = None) -> torch.Tensor:
    """The Triton kernels themselves (see `prefix_attention`); chunk 0 = one program per row and head. With
    `shared` (split programs only) each row's keys begin after its voice's, whose partials come from
    `cascade_attention.voice_partials` and join the row's in the combine."""
    block_n = min(block_n, chunk) if chunk else block_n
    if chunk % block_n:
        raise ValueError(f"chunk ({chunk}) must be a multiple of block_n ({block_n})")
    if shared is not None and not chunk:
        raise ValueError("a shared voice prefix needs split programs (chunk > 0)")
    B, H, _, D = q.shape
    out = torch.empty(B, H, D, device=q.device, dtype=q.dtype)
    q3 = q[:, :, 0]
    splits = triton.cdiv(k.shape[2], chunk) if chunk else 1
    part = torch.empty(B * H, splits, D + 2, device=q.device, dtype=torch.float32) if chunk else out
    start = shared.lengths if shared is not None else lengths  # unread without START
    _prefix_attention_kernel[(B * H, splits)](q3, k, v, out, part, lengths, start, H, D ** -0.5,
                                              q3.stride(0), q3.stride(1), k.stride(0), k.stride(1), k.stride(2),
                                              v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1),
                                              HEAD_DIM=D, BLOCK_N=block_n, CHUNK=chunk, START=shared is not None,
                                              num_warps=num_warps)
    if chunk:
        vpart, plen, vsplits = part, lengths, 0
        if shared is not None:
            from .cascade_attention import voice_partials
            vpart = voice_partials(q3, shared)
            plen, vsplits = shared.lengths, vpart.shape[1]
        _combine_kernel[(B * H,)](part, out, H, splits, out.stride(0), out.stride(1), vpart, plen, vsplits,
                                  HEAD_DIM=D, SPLITS=triton.next_power_of_2(splits),
                                  VSPLITS=triton.next_power_of_2(vsplits) if vsplits else 0)
    return out[:, :, None]


if triton is not None:
    # A custom op: torch.compile (the decoder layers under `compile`) sees one opaque call, shapes from the fake.
    @kernel_op("prefix_attention", mutates_args=())
    def _prefix_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                             chunk: int) -> torch.Tensor:
        return launch(q, k, v, lengths, chunk)

    @_prefix_attention_op.register_fake
    def _(q, k, v, lengths, chunk):
        return q.new_empty(q.shape)

    @kernel_op("shared_prefix_attention", mutates_args=())
    def _shared_prefix_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                                    chunk: int, shared_k: torch.Tensor, shared_v: torch.Tensor,
                                    shared_rows: torch.Tensor, shared_lengths: torch.Tensor, members: torch.Tensor,
                                    counts: torch.Tensor, entry_lengths: torch.Tensor) -> torch.Tensor:
        return launch(q, k, v, lengths, chunk, shared=SharedPrefix(shared_k, shared_v, shared_rows, shared_lengths,
                                                                   members, counts, entry_lengths))

    @_shared_prefix_attention_op.register_fake
    def _(q, k, v, lengths, chunk, shared_k, shared_v, shared_rows, shared_lengths, members, counts, entry_lengths):
        return q.new_empty(q.shape)


def prefix_bias(lengths: torch.Tensor, span: int, dtype: torch.dtype) -> torch.Tensor:
    """lengths (B,) -> additive mask (B, 1, 1, span): 0 before each row's length, -inf from it on."""
    live = torch.arange(span, device=lengths.device)[None] < lengths[:, None]
    return torch.zeros(live.shape, device=lengths.device, dtype=dtype).masked_fill_(~live, float("-inf"))[:, None, None]
