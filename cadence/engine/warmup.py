"""Warm-up traffic: what a server runs through its engine after capturing graphs and before taking requests."""

from __future__ import annotations

import time
from collections import deque

from .request import Request


def default_request_flags(family) -> tuple[bool, bool]:
    """(use_top_k, use_top_p) of the family's default requests."""
    d = family.defaults
    return d["top_k"] > 0, d["top_p"] < 1.0


def default_filter_flags(family) -> list[tuple[bool, bool]]:
    """(use_top_k, use_top_p) variants a warm-up captures: none, and those of the family's default requests."""
    return sorted({(False, False), default_request_flags(family)})


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
    text = "Warming up: " + "the quick brown fox jumps over the lazy dog, " * 2  # fits every checkpoint
    for count, stream in ((1, True), (n, True), (1, False), (n, False)):
        # English text: every family speaks it (the multilingual one when told so)
        params = [engine.tts.params(seed=i, max_new_tokens=64, language="en") for i in range(count)]
        handles = [engine.submit(Request(text, voice, params[i], watermark=False,
                                         speech_tokens_only=True, ignore_eos=True, stream=stream))
                   for i in range(count)]
        for h in handles:
            h.result()


FIRST_BATCH = 16  # first-traffic graphs: batch sizes up to one admission (`admission.ADMIT_MAX`)
FIRST_TEXT_IDS = 100  # ... the prompts of texts up to this many ids (a few sentences)
FIRST_TOKENS = 300  # ... and their first this many speech tokens (12 s of speech)


def first_traffic(keys: list[tuple], flags: tuple[bool, bool], lo: int, hi: int) -> list[tuple]:
    """The decode graphs (batch, length, *flags) that a first burst of default requests steps through: batch
    sizes of one admission, the default sampling flags, attention lengths `lo` to `hi` (the buckets of the
    shortest prompt and of a long prompt with its first `FIRST_TOKENS` tokens). Each one missing costs its first
    round eagerly (on an H100 the first requests' latency was 2.5x the warm one's, most of it such rounds)."""
    return [k for k in keys if k[0] <= FIRST_BATCH and lo <= k[1] <= hi and tuple(k[2:]) == flags]


PLANNED_SHARE = 0.2
"""While requests run, the most of the GPU thread's time that captures other than a waiting request's decode graph
may take: each such capture (a decode graph ~0.05-0.15 s, a flow graph up to ~1 s) is followed by rounds worth four
times its duration. A decode graph a running request waits for goes first, unthrottled; an engine with no request
anywhere (T3 or S3Gen) captures back to back."""


class BackgroundWarmup:
    """The engine's graph captures done while it serves: a server answers `ready` once its weights are loaded,
    and the decode and flow graphs are captured on the GPU thread afterwards, a few at a time between decode
    rounds (back to back while no request is anywhere in the engine). Until its graph is there, a step or a
    solve runs eagerly (same kernels, no capture stall on a request's path) and its shape moves to the front of
    the queue. Captures of planned shapes beside traffic are held to `PLANNED_SHARE` of the thread's time: one
    after every decode round made the first requests after `ready` several times slower than once warm."""

    def __init__(self, engine, clock=time.perf_counter):
        self.engine = engine
        self.tasks: deque[tuple[str, tuple]] = deque()
        self.clock = clock
        self._planned_after = 0.0  # while busy, no planned capture before this time
        self.first: list[tuple] = []  # the plan's first-traffic decode graphs, captured first

    @property
    def first_pending(self) -> int:
        """First-traffic decode graphs (`first_traffic`) not captured yet; a server answers ready once none is."""
        return sum(1 for k in self.first if k not in self._decoder.graphs)

    def wait_first(self, timeout: float) -> bool:
        """Block until the first-traffic graphs are captured (the GPU thread captures them back to back while no
        request is in the engine), at most `timeout` seconds. -> whether they are."""
        deadline = time.perf_counter() + timeout
        while self.first_pending and time.perf_counter() < deadline:
            time.sleep(0.01)
        return not self.first_pending

    @property
    def pending(self) -> int:
        return len(self.tasks) + len(self._decoder.wanted) + len(self._flow.wanted if self._flow else ())

    @property
    def _decoder(self):
        return self.engine.decoder

    @property
    def _flow(self):
        return self.engine.tts.audio_runner.cfm_graphs

    def plan(self, max_new_tokens: int) -> None:
        """Queue every graph `Engine.warmup` would capture; from now on missing graphs run eagerly."""
        from .cfm_graph import flow_graph_shapes
        eng = self.engine
        flags = default_filter_flags(eng.tts.family)
        decoder = self._decoder
        keys = decoder.graph_keys(flags)

        def bucket(positions: int) -> int:  # the decoder's attention length, the slot's at most
            return decoder.length_for(min(positions, decoder.lengths[-1]))
        self.first = first_traffic(keys, default_request_flags(eng.tts.family), bucket(eng.prefill_len(1)),
                                   bucket(eng.prefill_len(FIRST_TEXT_IDS) + FIRST_TOKENS))
        first = set(self.first)
        self.tasks.extend(("decode", k) for k in self.first + [k for k in keys if k not in first])
        self.tasks.extend(("flow", s) for s in flow_graph_shapes(eng.tts, max_new_tokens, eng.max_batch))
        self._decoder.lazy = True
        if self._flow is not None:
            self._flow.lazy = True

    def run_one(self, busy: bool = False, audio_busy: bool = False) -> bool:
        """Capture the next graph: a decode graph a request asked for first, at once; then a flow graph a request
        asked for, then the next of the plan, each while `busy` only within `PLANNED_SHARE` of the time. No flow
        graph while `audio_busy`: its capture holds the lock every S3Gen solve takes (~1 s for a 10-step solve on
        an H100: captured back to back beside the first requests' S3Gen, they held it up for seconds at a time).
        `busy`: a request is anywhere in the engine; `audio_busy`: the audio worker has S3Gen work.
        -> whether it captured one."""
        decoder, flow, runner = self._decoder, self._flow, self.engine.tts.audio_runner
        if decoder.wanted:
            decoder.capture(decoder.wanted.pop(0))
            return True
        if busy and self.clock() < self._planned_after:
            return False
        t0 = self.clock()
        if flow is not None and flow.wanted and not audio_busy:
            with flow.lock:
                key = flow.wanted.pop(0)
            flow.prepare(*key, runner.device, runner.flow_dtype)
        elif self.tasks and not (audio_busy and self.tasks[0][0] == "flow"):
            kind, key = self.tasks.popleft()
            if kind == "decode":
                decoder.capture(key)
            else:
                flow.prepare(*key, runner.device, runner.flow_dtype)
        else:
            return False
        now = self.clock()
        self._planned_after = now + (now - t0) * (1 - PLANNED_SHARE) / PLANNED_SHARE
        return True
