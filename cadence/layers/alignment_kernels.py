"""The multilingual model's end-of-speech rules (`layers.alignment`) as two Triton kernels, one program per row:
`text_attention_into` (the three watched heads' mean attention of the newest query over the text) and
`step_and_apply` (the rules' state update and the EOS suppression or forcing in the logits).

Why: as eager tensor math the rules are ~50 small kernels in every decode step (three heads' scores, softmaxes,
the argmax and running sums, the logit rewrite), about a tenth of a single request's captured step on an H100.
The math is the eager functions': fp32 scores scaled by 1/sqrt(D), a softmax over the row's live keys, the mean of
the three heads as ((h0 + h1) + h2) / 3; argmax ties go to the first column, as `torch.argmax`."""

from __future__ import annotations

import torch

from .alignment import BIG, AlignmentState

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of torch
    triton = None

if triton is not None:
    @triton.jit
    def _softmax_stats(q, k_ptr, s_a, L, scale, D: tl.constexpr, BLOCK_A: tl.constexpr):
        """Running max and sum of exp over the first L keys (k_ptr: this row's (A, D) keys) for query q (D,)."""
        a = tl.arange(0, BLOCK_A)
        d = tl.arange(0, D)
        m = tl.max(tl.full((BLOCK_A,), float("-inf"), tl.float32), 0)
        s = tl.sum(tl.zeros((BLOCK_A,), tl.float32), 0)
        for start in range(0, L, BLOCK_A):
            live = start + a < L
            k = tl.load(k_ptr + (start + a)[:, None] * s_a + d[None, :], mask=live[:, None], other=0.0)
            sc = tl.where(live, tl.sum(k.to(tl.float32) * q[None, :], 1) * scale, float("-inf"))
            m_new = tl.maximum(m, tl.max(sc, 0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(sc - m_new), 0)
            m = m_new
        return m, s

    @triton.jit
    def _text_probs(q, k_ptr, s_a, cols, live, m, s, scale, D: tl.constexpr):
        d = tl.arange(0, D)
        k = tl.load(k_ptr + cols[:, None] * s_a + d[None, :], mask=live[:, None], other=0.0)
        sc = tl.sum(k.to(tl.float32) * q[None, :], 1) * scale
        return tl.where(live, tl.exp(sc - m) / s, 0.0)

    @triton.jit
    def _text_attention_kernel(q0, q1, q2, sq0, sq1, sq2, k0, k1, k2, sk0, sk1, sk2, sa0, sa1, sa2,
                               len_ptr, s_len, out_ptr, s_out, text_start, width, scale,
                               D: tl.constexpr, BLOCK_A: tl.constexpr):
        """Program b: row b's three heads (queries q_j + b * sq_j, keys k_j + b * sk_j, key stride sa_j, D
        contiguous) over its first L = lengths[b * s_len] keys -> out[b, c] for text columns
        c < min(width, L - text_start)."""
        b = tl.program_id(0)
        L = tl.load(len_ptr + b * s_len).to(tl.int32)
        d = tl.arange(0, D)
        qa = tl.load(q0 + b * sq0 + d).to(tl.float32)
        qb = tl.load(q1 + b * sq1 + d).to(tl.float32)
        qc = tl.load(q2 + b * sq2 + d).to(tl.float32)
        ka, kb, kc = k0 + b * sk0, k1 + b * sk1, k2 + b * sk2
        ma, sa = _softmax_stats(qa, ka, sa0, L, scale, D, BLOCK_A)
        mb, sb = _softmax_stats(qb, kb, sa1, L, scale, D, BLOCK_A)
        mc, sc = _softmax_stats(qc, kc, sa2, L, scale, D, BLOCK_A)
        a = tl.arange(0, BLOCK_A)
        n = tl.minimum(width, L - text_start)
        for w0 in range(0, n, BLOCK_A):
            live = w0 + a < n
            cols = text_start + w0 + a
            total = _text_probs(qa, ka, sa0, cols, live, ma, sa, scale, D)
            total = total + _text_probs(qb, kb, sa1, cols, live, mb, sb, scale, D)
            total = total + _text_probs(qc, kc, sa2, cols, live, mc, sc, scale, D)
            tl.store(out_ptr + b * s_out + w0 + a, total / 3.0, mask=live)

    @triton.jit
    def _rules_kernel(attn_ptr, s_attn, text_len_ptr, frame_ptr, pos_ptr, complete_ptr, tail_ptr, repeat_ptr,
                      last_two_ptr, history_ptr, enabled_ptr, logits_ptr, s_logits, out_ptr, s_out, width, V, eos,
                      big, BLOCK_W: tl.constexpr, BLOCK_V: tl.constexpr):
        """Program b: `alignment_step` on row b's state (updated in place), then `apply_alignment` on its logits."""
        b = tl.program_id(0)
        S = tl.load(text_len_ptr + b)
        frame = tl.load(frame_ptr + b)
        position = tl.load(pos_ptr + b)
        was_complete = tl.load(complete_ptr + b) != 0
        col = tl.arange(0, BLOCK_W)
        live = (col < S) & (col <= frame) & (col < width)  # the frame rule, and the row's own text
        a = tl.load(attn_ptr + b * s_attn + col, mask=live, other=0.0)
        cur = tl.argmax(tl.where(live, a, -1.0), 0, tie_break_left=True).to(tl.int64)
        step = cur - position
        position = tl.where((step > -4) & (step < 7), cur, position)
        complete = was_complete | (position >= S - 3)
        earlier = tl.max(tl.where(col < S - 5, a, 0.0), 0)
        tail_max = tl.max(tl.zeros((BLOCK_W,), tl.float32), 0)
        for i in tl.static_range(3):  # the last three text tokens, as the eager gather (clamped at 0)
            c = tl.maximum(S - 3 + i, 0)
            got = tl.load(attn_ptr + b * s_attn + c, mask=(c < S) & (c <= frame) & (c < width), other=0.0)
            t = tl.load(tail_ptr + b * 3 + i) + got * was_complete.to(tl.float32)
            tl.store(tail_ptr + b * 3 + i, t)
            tail_max = tl.maximum(tail_max, t)
        repeat = tl.load(repeat_ptr + b) + earlier * was_complete.to(tl.float32)
        tl.store(repeat_ptr + b, repeat)
        tl.store(pos_ptr + b, position)
        tl.store(complete_ptr + b, complete.to(tl.int1))
        tl.store(frame_ptr + b, frame + 1)
        history = tl.load(history_ptr + b)
        token_repeat = (history >= 3) & (tl.load(last_two_ptr + b * 2) == tl.load(last_two_ptr + b * 2 + 1))
        on = tl.load(enabled_ptr + b) != 0
        force = ((complete & ((tail_max >= 5.0) | (repeat > 5.0))) | token_repeat) & on
        suppress = (cur < S - 3) & (S > 5) & on
        v = tl.arange(0, BLOCK_V)
        for v0 in range(0, V, BLOCK_V):
            ids = v0 + v
            x = tl.load(logits_ptr + b * s_logits + ids, mask=ids < V, other=0.0)
            is_eos = ids == eos
            x = tl.where(suppress & is_eos, -big, x)
            x = tl.where(force, tl.where(is_eos, big, -big), x)
            tl.store(out_ptr + b * s_out + ids, x, mask=ids < V)


def applies(device: torch.device, n_heads: int) -> bool:
    """The kernels serve CUDA rows watched at three heads (every model of the family, tiny test models included)."""
    return triton is not None and device.type == "cuda" and n_heads == 3


def text_attention_into(out: torch.Tensor, queries: list[torch.Tensor], keys: list[torch.Tensor],
                        lengths: torch.Tensor, text_start: int) -> None:
    """`alignment.text_attention` written into `out` (B, width): queries three (B, D), keys three (B, A, D) views
    with D contiguous. Columns at or past a row's length are left as they are: the rules read text columns only,
    and a row's text ends before its length."""
    B, width = out.shape
    D = keys[0].shape[-1]
    q = [t if t.stride(-1) == 1 else t.contiguous() for t in queries]
    _text_attention_kernel[(B,)](*q, *(t.stride(0) for t in q), *keys, *(k.stride(0) for k in keys),
                                 *(k.stride(1) for k in keys), lengths, lengths.stride(0), out, out.stride(0),
                                 text_start, width, D ** -0.5, D=D, BLOCK_A=64, num_warps=4)


def step_and_apply(state: AlignmentState, attn: torch.Tensor, text_len: torch.Tensor, last_two: torch.Tensor,
                   history: torch.Tensor, enabled: torch.Tensor, logits: torch.Tensor, eos: int) -> torch.Tensor:
    """`alignment_step` (state updated in place) then `apply_alignment` for rows enabled -> new logits (B, V)."""
    B, V = logits.shape
    out = torch.empty_like(logits)
    width = attn.shape[1]
    _rules_kernel[(B,)](attn, attn.stride(0), text_len, state.frame, state.position, state.complete, state.tail,
                        state.repeat, last_two, history, enabled, logits, logits.stride(0), out, out.stride(0),
                        width, V, eos, BIG, BLOCK_W=triton.next_power_of_2(width), BLOCK_V=1024, num_warps=4)
    return out
