"""Warm-up traffic: what a server runs through its engine after capturing graphs and before taking requests."""

from __future__ import annotations

from ..sampling_params import SamplingParams
from .request import Request


def warm_bursts(engine) -> None:
    """One stream alone, then a full admission of streams, then one one-piece request alone (S3Gen's
    single-request path) and a full admission of them (its batched path), through the whole engine: the first
    burst of each size otherwise pays for the allocator's first cudaMalloc of its blocks (measured on an H100:
    8 streams' first audio 324 ms on a cold burst, 156 ms on the next). Their work counts in the engine's
    statistics like any other."""
    voice = engine.tts.default_voice
    if voice is None:  # no built-in voice to warm with: the first requests pay instead
        return
    n = min(16, engine.max_batch)
    text = "Warming up: " + "the quick brown fox jumps over the lazy dog, " * 6
    for count, stream in ((1, True), (n, True), (1, False), (n, False)):
        params = [SamplingParams.for_family(engine.tts.family, seed=i, max_new_tokens=64) for i in range(count)]
        handles = [engine.submit(Request(text, voice, params[i], watermark=False,
                                         speech_tokens_only=True, ignore_eos=True, stream=stream))
                   for i in range(count)]
        for h in handles:
            h.result()
