"""The voices' prompt positions of a batched decode step, read once per voice for all its rows (cascade attention).

Every request of one voice begins with the same KV positions (Turbo: the speaker token and up to 375 prompt speech
tokens, more than half of a 300-token request's keys). Read by each row from its own cache they cost a batch of 64
rows 64 reads; read by each row from one shared copy they were slower still (measured on an H100; presumably
64 x 16 programs asking for the same lines at once). Here a program takes one (voice, head, block of keys): it
loads that block once and multiplies it with the queries of all the voice's rows together (tensor-core dots, 16
rows at a time), writing each row's partial softmax (max, denominator, weighted values) for that block. The decode
kernel (`decode_attention`) reads each row's own keys after its voice's, and its combine step merges both sets of
partials: the same attention as over the row's whole cache, in another order of summation."""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of torch
    triton = None

BLOCK_KEYS = 128  # a voice's keys per program
ROWS = 16  # rows per dot (the smallest tile tl.dot takes)

if triton is not None:
    @triton.jit
    def _voice_block_kernel(q_ptr, k_ptr, v_ptr, members_ptr, counts_ptr, elen_ptr, out_ptr, n_rows, n_heads,
                            n_blocks, scale, s_qb, s_qh, s_ke, s_kh, s_kn, s_ve, s_vh, s_vn, s_me,
                            HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
        """Program (entry, head, block): keys [block * BLOCK, ...) of that entry's positions, loaded once, against
        the queries of each of its member rows (those below n_rows, the step's); out ((n_rows * heads, n_blocks,
        HEAD_DIM + 2) fp32) gets each row's accumulator, max and denominator (max -inf: no key in the block)."""
        e, h, blk = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        count = tl.load(counts_ptr + e)
        n_keys = tl.load(elen_ptr + e)
        d = tl.arange(0, HEAD_DIM)
        n = blk * BLOCK + tl.arange(0, BLOCK)
        key_live = n < n_keys
        k = tl.load(k_ptr + e * s_ke + h * s_kh + n[:, None] * s_kn + d[None, :], mask=key_live[:, None], other=0.0)
        v = tl.load(v_ptr + e * s_ve + h * s_vh + n[:, None] * s_vn + d[None, :], mask=key_live[:, None], other=0.0)
        for first in range(0, count, ROWS):
            r = first + tl.arange(0, ROWS)
            row = tl.load(members_ptr + e * s_me + r, mask=r < count, other=0)
            row_live = (r < count) & (row < n_rows)
            q = tl.load(q_ptr + row[:, None] * s_qb + h * s_qh + d[None, :], mask=row_live[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale  # (ROWS, BLOCK)
            s = tl.where(key_live[None, :], s, float("-inf"))
            m = tl.max(s, 1)
            p = tl.where(key_live[None, :], tl.exp(s - m[:, None]), 0.0)
            denom = tl.sum(p, 1)
            acc = tl.dot(p.to(v.dtype), v)  # (ROWS, HEAD_DIM)
            at = out_ptr + ((row * n_heads + h) * n_blocks + blk) * (HEAD_DIM + 2)
            tl.store(at[:, None] + d[None, :], acc, mask=row_live[:, None])
            tl.store(at + HEAD_DIM, m, mask=row_live)
            tl.store(at + HEAD_DIM + 1, denom, mask=row_live)


def voice_partials(q3: torch.Tensor, shared) -> torch.Tensor:
    """q3 (B, H, D) one query per row; `shared` a `SharedPrefix` of one layer -> (B * H, blocks, D + 2) fp32 partial
    softmaxes of each row over its voice's positions, block by block (rows without a voice: unwritten, which the
    combine step skips by their voice length 0)."""
    B, H, D = q3.shape
    E, _, P, _ = shared.k.shape
    blocks = triton.cdiv(P, BLOCK_KEYS)
    out = torch.empty(B * H, blocks, D + 2, device=q3.device, dtype=torch.float32)
    k, v = shared.k, shared.v
    _voice_block_kernel[(E, H, blocks)](q3, k, v, shared.members, shared.counts, shared.entry_lengths, out, B, H,
                                        blocks, D ** -0.5, q3.stride(0), q3.stride(1), k.stride(0), k.stride(1),
                                        k.stride(2), v.stride(0), v.stride(1), v.stride(2), shared.members.stride(0),
                                        HEAD_DIM=D, BLOCK=BLOCK_KEYS, ROWS=ROWS, num_warps=4)
    return out
