"""The multilingual model's end-of-speech rules (chatterbox-tts 0.1.7's `AlignmentStreamAnalyzer`) as tensor math
over a batch of rows: no host reads, no Python branches on values, so the step can live inside a captured decode
step.

The reference watches three attention heads, (layer 12, head 15), (13, 11) and (9, 2), and reads, each step, their
mean attention of the newest query over the text positions. From that row it keeps where in the text speech has
got to, and each step it
- suppresses EOS while the row's most-attended text position is before the last three (texts over 5 tokens);
- forces EOS once the text is complete (the position reached the last three) and then either the last three text
  tokens have drawn 5 or more attention in total since (a long tail), or attention on earlier text (all but the
  last five) has summed to more than 5 since (an alignment repetition); or whenever the last two generated speech
  tokens are equal (from the third token on, the BOS counted).
Suppressing sets the EOS logit to -2^15; forcing sets every logit to -2^15 and EOS to +2^15.

Text columns past the current frame index are zeroed before anything is read (the reference's
`A_chunk[:, frame + 1:] = 0`): speech can advance at most one text token per frame. The running sums replace the
reference's growing alignment matrix (rows since completion only ever add)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALIGNED_HEADS = ((12, 15), (13, 11), (9, 2))
"""(layer, head) pairs whose attention the rules read, as the reference's LLAMA_ALIGNED_HEADS."""
BIG = 2.0 ** 15


@dataclass
class AlignmentState:
    """Per-row state, (B,) tensors (tail: (B, 3))."""

    frame: torch.Tensor  # steps analysed so far
    position: torch.Tensor  # the text position speech has reached
    complete: torch.Tensor  # bool
    tail: torch.Tensor  # attention on the last three text tokens since completion, per token
    repeat: torch.Tensor  # sum over rows since completion of the row's max attention on earlier text

    @classmethod
    def zeros(cls, rows: int, device) -> "AlignmentState":
        z = lambda *s, dtype=torch.long: torch.zeros(*s, device=device, dtype=dtype)  # noqa: E731
        return cls(z(rows), z(rows), z(rows, dtype=torch.bool), z(rows, 3, dtype=torch.float32),
                   z(rows, dtype=torch.float32))

    def first(self, b: int) -> "AlignmentState":
        """Rows [0, b) as views: a step on them updates this state."""
        return AlignmentState(self.frame[:b], self.position[:b], self.complete[:b], self.tail[:b], self.repeat[:b])

    def reset(self, rows) -> None:
        """Start rows `rows` (a slice, index tensor or bool mask) afresh, in place."""
        for t in (self.frame, self.position, self.complete, self.tail, self.repeat):
            t[rows] = 0


def alignment_step(state: AlignmentState, text_attn: torch.Tensor, text_len: torch.Tensor,
                   last_two: torch.Tensor, n_generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the rules for every row, updating `state` in place (its tensors keep their storage, so views
    of a larger state and the buffers a CUDA graph captured stay live).

    text_attn (B, S_max): the three heads' mean attention of the newest query over the row's text positions
    (SOT and EOT included; columns past the row's length ignored); text_len (B,) its text length S; last_two (B, 2)
    the last two tokens of the row's history (BOS first); n_generated (B,) the history's length (BOS included).
    -> (suppress_eos, force_eos), (B,) bool each."""
    B, S_max = text_attn.shape
    col = torch.arange(S_max, device=text_attn.device)[None]
    live = (col < text_len[:, None]) & (col <= state.frame[:, None])  # the frame rule, and the row's own text
    a = torch.where(live, text_attn.float(), torch.zeros((), device=text_attn.device))
    # argmax over the live columns (first of equal maxima, as torch.argmax on the reference's row)
    cur = torch.where(live, a, torch.full((), -1.0, device=a.device)).argmax(-1)
    step = cur - state.position
    state.position.copy_(torch.where((step > -4) & (step < 7), cur, state.position))
    was_complete = state.complete.clone()
    state.complete.copy_(was_complete | (state.position >= text_len - 3))
    # sums over rows after the one that completed the text: this row counts if the text was complete before it
    tail_cols = torch.gather(a, 1, (text_len[:, None] - 3 + torch.arange(3, device=a.device)[None]).clamp(min=0))
    earlier = torch.where(col < text_len[:, None] - 5, a, torch.zeros((), device=a.device)).amax(-1)
    state.tail.add_(tail_cols * was_complete[:, None])
    state.repeat.add_(earlier * was_complete)
    long_tail = state.complete & (state.tail.amax(-1) >= 5)
    repetition = state.complete & (state.repeat > 5)
    token_repeat = (n_generated >= 3) & (last_two[:, 0] == last_two[:, 1])
    suppress = (cur < text_len - 3) & (text_len > 5)
    state.frame.add_(1)
    return suppress, long_tail | repetition | token_repeat


def text_attention(queries: list[torch.Tensor], keys: list[torch.Tensor], lengths: torch.Tensor, text_start: int,
                   width: int) -> torch.Tensor:
    """The watched heads' mean attention of one query per row over the text, as the reference's eager attention
    gives it: per head softmax(q.k / sqrt(D)) over the row's first lengths[b] keys, fp32.

    queries: one (B, D) per head; keys: one (B, A, D) per head (the row's cached keys, this query's own included);
    lengths (B,). -> (B, width): columns [text_start, text_start + width) of the mean, zero past A."""
    A, D = keys[0].shape[1], keys[0].shape[2]
    live = torch.arange(A, device=lengths.device)[None] < lengths[:, None]
    total = None
    for q, k in zip(queries, keys):
        scores = torch.einsum("bd,bad->ba", q.float(), k.float()) * D ** -0.5
        probs = scores.masked_fill(~live, float("-inf")).softmax(-1)
        total = probs if total is None else total + probs
    text = (total / len(queries))[:, text_start: text_start + width]  # (B, <= width)
    return torch.nn.functional.pad(text, (0, width - text.shape[1]))


def apply_alignment(logits: torch.Tensor, suppress: torch.Tensor, force: torch.Tensor, eos: int) -> torch.Tensor:
    """logits (B, V) after CFG -> with EOS suppressed (-2^15) or forced (all -2^15, EOS +2^15) per row."""
    is_eos = torch.arange(logits.shape[-1], device=logits.device) == eos  # no host write: capturable
    out = torch.where(suppress[:, None] & is_eos[None], torch.full((), -BIG, device=logits.device), logits)
    forced = torch.where(is_eos, torch.full((), BIG, device=logits.device), torch.full((), -BIG, device=logits.device))
    return torch.where(force[:, None], forced[None].to(logits.dtype), out)
