"""On-device sampling for T3: CFG combine, repetition penalty from a token-count buffer, temperature,
min-p, top-p, top-k, then a draw by the exponential-race trick (no `torch.multinomial`, no host sync).

All knobs arrive as (B,) tensors so one batch can carry different settings per request."""

from __future__ import annotations

import torch


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor | None, cfg_weight: torch.Tensor) -> torch.Tensor:
    """cond/uncond (B, V) logits of the conditional and unconditional rows -> guided logits (B, V) fp32:
    cond + w (cond - uncond); uncond None (no CFG): cond."""
    logits = cond.float()
    if uncond is None:
        return logits
    return logits + cfg_weight.float()[:, None] * (logits - uncond.float())


def process_logits(cond: torch.Tensor, uncond: torch.Tensor | None, counts: torch.Tensor,
                   cfg_weight: torch.Tensor, repetition_penalty: torch.Tensor, temperature: torch.Tensor,
                   min_p: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
                   use_top_k: bool = True, use_top_p: bool = True, penalty_last: bool = False) -> torch.Tensor:
    """Turn raw speech logits into sampling probabilities, in the reference's order: CFG, repetition penalty,
    temperature, min-p, top-k, top-p; with `penalty_last` (Turbo's order, HF's processors as its reference
    lists them) the penalty comes after the filters instead.

    cond/uncond (B, V) logits of the conditional and unconditional CFG rows (uncond None: no CFG); counts
    (B, V) how often each token is in the history the penalty sees; knobs (B,); min_p = 0, top_k = 0 and
    top_p = 1 turn a filter off. `use_top_k`/`use_top_p` let a caller that knows no row uses the filter skip
    its sort. Returns probs (B, V) fp32."""
    logits = cfg_combine(cond, uncond, cfg_weight)
    seen = counts > 0
    penalty = repetition_penalty.float()[:, None]
    if not penalty_last:
        logits = torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
    logits = logits / temperature.float()[:, None]
    neg_inf = logits.new_full((), float("-inf"))  # a fill, not a host copy: capturable in a CUDA graph
    # min-p: drop tokens below min_p times the top token's probability.
    probs = logits.softmax(-1)
    logits = torch.where(probs < min_p.float()[:, None] * probs.amax(-1, keepdim=True), neg_inf, logits)
    if use_top_k and not use_top_p:  # keep the k largest (k = 0: off)
        k = top_k.clamp(min=0)
        kth = torch.sort(logits, dim=-1, descending=True).values.gather(
            -1, (k - 1).clamp(min=0, max=logits.shape[-1] - 1)[:, None])
        logits = torch.where((k[:, None] > 0) & (logits < kth), neg_inf, logits)
    elif use_top_p:
        # One ascending sort serves both filters: top-k drops the low end of it (masking keeps it sorted),
        # then top-p drops the low tail whose cumulative probability is at most 1 - top_p (the top token stays).
        sorted_logits, order = torch.sort(logits, dim=-1, stable=True)  # ties (bf16 logits) in id order
        V = logits.shape[-1]
        drop = torch.zeros_like(sorted_logits, dtype=torch.bool)
        if use_top_k:
            k = top_k.clamp(min=0)
            kth = sorted_logits.gather(-1, (V - k).clamp(min=0, max=V - 1)[:, None])  # the k-th largest
            drop = (k[:, None] > 0) & (sorted_logits < kth)
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        tail = sorted_logits.softmax(-1).cumsum(-1) <= (1 - top_p.float()[:, None])
        tail[:, -1] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop | tail), float("-inf"))
    if penalty_last:
        logits = torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
    return logits.softmax(-1)


def filters_for(device: torch.device | str):
    """`process_logits` for decoders whose tensors live on `device`: on CUDA the one-kernel version
    (`layers.sampling_kernel`, the same math without ~25 small kernels and a sort a step), else the eager math."""
    from . import sampling_kernel
    if not sampling_kernel.applies(device):
        return process_logits

    def fused(cond, uncond, counts, cfg_weight, repetition_penalty, temperature, min_p, top_p, top_k,
              use_top_k: bool = True, use_top_p: bool = True, penalty_last: bool = False) -> torch.Tensor:
        # the kernel skips a filter that is off in a row by itself: the use_* hints are not needed
        return sampling_kernel.filtered_probs(cfg_combine(cond, uncond, cfg_weight), counts, repetition_penalty,
                                              temperature, min_p, top_p, top_k, penalty_last)
    return fused


def sample(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Exponential race: argmax(p / E) with E ~ Exp(1) draws token i with probability p_i.
    `noise` (B, V) holds the exponential draws, made from each request's own generator."""
    return (probs / noise).argmax(-1)

