"""How often the sampling filters' kernel and the eager filters draw a different token from the same logits and
the same race noise (GPU): rows shaped like Turbo's flat random-weight logits (top-k 1000 and top-p 0.95 both
cut), and how often their kept sets differ. Usage: python scripts/filter_token_agreement.py [ROWS]"""

import sys

import torch

from cadence.layers.sampling import process_logits, sample
from cadence.layers.sampling_kernel import filtered_probs


def main(rows: int = 4096) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    B, V = rows, 6563
    logits = torch.randn(B, V, device="cuda", generator=g) * 0.5
    counts = (torch.rand(B, V, device="cuda", generator=g) < 0.03).int()
    knob = lambda v: torch.full((B,), v, device="cuda")  # noqa: E731
    rep, temp, min_p, top_p = knob(1.2), knob(0.8), knob(0.0), knob(0.95)
    top_k = torch.full((B,), 1000, device="cuda", dtype=torch.long)
    eager = process_logits(logits, None, counts, knob(0.0), rep, temp, min_p, top_p, top_k, penalty_last=True)
    fused = filtered_probs(logits, counts, rep, temp, min_p, top_p, top_k, penalty_last=True)
    noise = torch.empty(B, V, device="cuda").exponential_(generator=g)
    kept_differs = ((eager > 0) != (fused > 0)).any(-1)
    tokens_differ = sample(eager, noise) != sample(fused, noise)
    print(f"rows {B}: kept sets differ in {int(kept_differs.sum())}, tokens differ in {int(tokens_differ.sum())}, "
          f"max prob difference {float((eager - fused).abs().max()):.2e}, "
          f"kept per row {float((eager > 0).sum(-1).float().mean()):.0f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
