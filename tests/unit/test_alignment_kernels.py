"""The multilingual end-of-speech rules as Triton kernels (`cadence.layers.alignment_kernels`), run on the CPU by
Triton's interpreter, against the eager functions they replace (which the parity tests hold to the reference):
the three heads' text attention, and the rules' steps with their logit rewrite, decision for decision."""

from tests.conftest import run_kernel_check

TEXT_ATTENTION_CHECK = r"""
import os, torch
dev = os.environ.get("CHECK_DEVICE", "cpu")
from cadence.layers.alignment import text_attention
from cadence.layers.alignment_kernels import text_attention_into
g = torch.Generator().manual_seed(0)
layers, rows, H, A, D, start, width = 3, 6, 4, 300, 64, 34, 200
watched = ((2, 1), (0, 3), (1, 0))
for per_slot, dtype in ((1, torch.float32), (2, torch.float32), (2, torch.bfloat16)):
    k_cache = torch.randn(layers, rows, H, A, D, generator=g).to(dev, dtype)
    # one row per slot (Turbo-like) or a CFG pair, the conditional row first
    q = torch.randn(rows, H, 1, D, generator=g).to(dev, dtype)
    queries = [q[::per_slot, h, -1] for _, h in watched]
    keys = [k_cache[l][::per_slot, h] for l, h in watched]  # strided views of the layered cache, as the guard takes
    b = queries[0].shape[0]
    # the whole cache, one text column, none; a strided view, as the batched decoder passes its rows' lengths
    lengths = torch.tensor([300, 0, 35, 0, 100, 0, 64, 0, 257, 0, 34, 0], dtype=torch.int32, device=dev)[: 2 * b : 2]
    ref = text_attention(queries, keys, lengths, start, width)
    out = torch.full((b, width), 7.0, device=dev)
    text_attention_into(out, queries, keys, lengths, start)
    for r in range(b):
        n = max(0, min(width, int(lengths[r]) - start))
        err = float((out[r, :n] - ref[r, :n]).abs().max()) if n else 0.0
        assert err < 1e-6, (per_slot, dtype, r, err)
        assert bool((out[r, n:] == 7.0).all())  # past the row's length: left as it was
print("ok")
"""

RULES_CHECK = r"""
import os, torch
dev = os.environ.get("CHECK_DEVICE", "cpu")
from cadence.layers.alignment import AlignmentState, alignment_step, apply_alignment
from cadence.layers.alignment_kernels import step_and_apply
g = torch.Generator().manual_seed(1)
EOS, V, width = 70, 100, 48
S = torch.tensor([20, 12, 33, 15, 5, 20])
kinds = ("tail", "back", "jumpy", "tokens", "short", "off")  # a long tail; back over the text; jumps; repeats
B = len(kinds)
eager, fused = AlignmentState.zeros(B, "cpu"), AlignmentState.zeros(B, dev)
enabled = torch.tensor([True, True, True, True, True, False])
history = torch.ones(B, dtype=torch.long)
last_two = torch.tensor([[-1, 6561]] * B)
pos = [0.0] * B
seen = set()
for f in range(90):
    attn = torch.rand(B, width, generator=g) * 0.05  # columns past each text: noise the rules must not read
    for b, kind in enumerate(kinds):
        n = int(S[b])
        if kind == "back":  # to the end at a token a frame, then straight back to the start: no long tail
            pos[b] = min(n - 1, pos[b] + 1.0) if f < n else 0.0
        elif kind == "jumpy":
            pos[b] = float(torch.randint(0, n, (), generator=g))
        else:
            pos[b] = min(n - 1, pos[b] + 0.6)
        attn[b, int(pos[b])] += 0.6 + 0.2 * float(torch.rand((), generator=g))
        if kind == "jumpy" and f % 7 == 0:
            attn[b] = 0.25  # ties: the first column wins, as torch.argmax
    logits = torch.randn(B, V, generator=g)
    sup, force = alignment_step(eager, attn, S, last_two, history)
    ref = apply_alignment(logits, sup & enabled, force & enabled, EOS)
    on = lambda t: t.to(dev)  # noqa: E731
    got = step_and_apply(fused, on(attn), on(S), on(last_two), on(history), on(enabled), on(logits), EOS).cpu()
    assert torch.equal(got, ref), f
    for name in ("frame", "position", "complete", "tail", "repeat"):
        assert torch.equal(getattr(fused, name).cpu(), getattr(eager, name)), (f, name)
    seen.update((kinds[b], "force" if force[b] else "suppress" if sup[b] else "none") for b in range(4))
    token = torch.randint(0, 60, (B,), generator=g)
    token[3] = 9 if f in (8, 9) else 6561 if f == 0 else token[3]  # repeats before the text is complete; the
    # first token equal to BOS: not a repeat yet (from the third token on)
    last_two = torch.stack([last_two[:, 1], token], 1)
    history += 1
assert {(k, d) for k in kinds[:4] for d in ("force", "suppress")} <= seen, seen
print("ok")
"""


def test_text_attention_kernel_equals_the_eager_heads_in_the_interpreter():
    run_kernel_check(TEXT_ATTENTION_CHECK)


def test_rules_kernel_decides_as_the_eager_rules_in_the_interpreter():
    run_kernel_check(RULES_CHECK)
