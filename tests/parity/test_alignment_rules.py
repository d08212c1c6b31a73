"""The multilingual end-of-speech rules (`cadence.layers.alignment`) against chatterbox-tts 0.1.7's
`AlignmentStreamAnalyzer`, step by step on recorded attention traces: the same attention rows of the three heads go
to both (the reference's hooks are given them directly), and the logits each hands back must be equal at every
step, so every suppress / force / none decision is the same. Traces cover a text read through to a long tail, one
that jumps back (alignment repetition), jumps too far to count (discontinuities), repeated speech tokens, short
texts (no suppression), and several rows in one batch at different lengths."""

import types

import pytest
import torch

from cadence.layers.alignment import ALIGNED_HEADS, AlignmentState, alignment_step, apply_alignment

pytestmark = pytest.mark.parity
EOS, V, LEN_COND = 6562, 64 + 6563, 34


def _reference_analyzer(S):
    from chatterbox.models.t3.inference.alignment_stream_analyzer import LLAMA_ALIGNED_HEADS, AlignmentStreamAnalyzer
    assert tuple(LLAMA_ALIGNED_HEADS) == ALIGNED_HEADS
    layer = types.SimpleNamespace(self_attn=types.SimpleNamespace(register_forward_hook=lambda hook: None))
    tfmr = types.SimpleNamespace(layers=[layer] * 30)
    return AlignmentStreamAnalyzer(tfmr, None, text_tokens_slice=(LEN_COND, LEN_COND + S), eos_idx=EOS)


def _trace(S, steps, seed, kind):
    """Per step, three heads' attention rows over all keys so far (frame 0: the prefill's rows), and the token."""
    g = torch.Generator().manual_seed(seed)
    j = LEN_COND + S
    rows, tokens, pos = [], [], 0.0
    for f in range(steps):
        keys = j + 2 + f  # cond + text + two BOS positions, then one key per generated token
        if kind in ("tail", "tokens"):
            pos = min(S - 1, pos + 0.6)
        elif kind == "back":  # read to the end (no faster than a token a frame), then back over the text
            pos = min(S - 1, pos + 0.95) if f < steps // 2 else max(0.0, pos - 1.5)
        elif kind == "jumpy":
            pos = float(torch.randint(0, S, (), generator=g))
        heads = []
        for _ in range(3):
            a = torch.rand(keys, generator=g) * 0.05
            a[LEN_COND + int(pos)] += 1.0 + torch.rand((), generator=g)
            a = a / a.sum()
            if f == 0:  # the prefill's map over every position; the rules read its last two rows (the BOS pair)
                full = torch.rand(keys, keys, generator=g) / keys
                full[-2:] = a
                heads.append(full)
            else:
                heads.append(a[None])
        rows.append(heads)
        rep = kind == "tokens" and f in (5, 6)
        tokens.append(1234 if rep else int(torch.randint(0, 6561, (), generator=g)))
    return rows, tokens


@pytest.mark.parametrize("kind, S, seed", [("tail", 20, 0), ("tail", 9, 1), ("back", 30, 2), ("jumpy", 25, 3),
                                           ("tokens", 15, 4), ("short", 5, 5), ("tail", 40, 6)])
# "short": a 5-token text (no suppression) that never reaches its end (the reference's repetition rule cannot
# take the max over no earlier text once a text that short is complete: it raises)
def test_each_step_decides_as_the_reference(kind, S, seed):
    rows, tokens = _trace(S, 120, seed, kind)
    ref = _reference_analyzer(S)
    state = AlignmentState.zeros(1, "cpu")
    history = [6561]  # BOS
    decisions = set()
    for f, heads in enumerate(rows):
        logits = torch.randn(1, V, generator=torch.Generator().manual_seed(100 + f))
        ref.last_aligned_attns = [h.clone() for h in heads]
        expected = ref.step(logits.clone(), next_token=history[-1])
        mean = torch.stack(heads).mean(0)[-1, LEN_COND:LEN_COND + S]  # the newest query's row, text columns
        last_two = torch.tensor([history[-2:] if len(history) > 1 else [history[-1], -1]])
        suppress, force = alignment_step(state, mean[None], torch.tensor([S]), last_two, torch.tensor([len(history)]))
        got = apply_alignment(logits.clone(), suppress, force, EOS)
        assert torch.equal(got, expected), (kind, f)
        decisions.add("force" if force[0] else "suppress" if suppress[0] else "none")
        history.append(tokens[f])
    if kind in ("tail", "tokens", "back"):
        assert "force" in decisions and "suppress" in decisions, decisions
    if kind == "short":
        assert "suppress" not in decisions


def test_rows_of_one_batch_decide_alone():
    """Three traces as one batch of rows at different text lengths: each row's decisions are its own."""
    specs = [("tail", 20, 10), ("back", 12, 11), ("tokens", 33, 12)]
    traces = [_trace(S, 40, seed, kind) for kind, S, seed in specs]
    lengths = torch.tensor([S for _, S, _ in specs])
    state = AlignmentState.zeros(3, "cpu")
    refs = [_reference_analyzer(S) for _, S, _ in specs]
    histories = [[6561] for _ in specs]
    for f in range(40):
        text = torch.zeros(3, int(lengths.max()))
        for b, ((rows, _), S) in enumerate(zip(traces, lengths.tolist())):
            text[b, :S] = torch.stack(rows[f]).mean(0)[-1, LEN_COND:LEN_COND + S]
        last_two = torch.tensor([h[-2:] if len(h) > 1 else [h[-1], -1] for h in histories])
        suppress, force = alignment_step(state, text, lengths, last_two, torch.tensor([len(h) for h in histories]))
        logits = torch.randn(3, V, generator=torch.Generator().manual_seed(f))
        got = apply_alignment(logits.clone(), suppress, force, EOS)
        for b, ref in enumerate(refs):
            ref.last_aligned_attns = [h.clone() for h in traces[b][0][f]]
            assert torch.equal(got[b:b + 1], ref.step(logits[b:b + 1].clone(), next_token=histories[b][-1])), (b, f)
            histories[b].append(traces[b][1][f])
