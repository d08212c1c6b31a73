"""The serving engine: one thread owns the GPU and loops schedule -> run -> postprocess.

schedule: admit waiting requests into free KV slots (prefill between decode steps), drop cancelled ones.
run: `eos_check_every` batched T3 decode steps over all running requests, then one host read of the done
     flags; finished requests leave their slots and go through S3Gen together (padded, length-grouped).
postprocess: watermarking and delivery on a thread of its own, off the GPU threads (`postprocess.Postprocess`).
When every slot is taken, new requests wait in the queue: the KV cache is allocated once, never grown."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
import numpy as np
import torch

from ..sampling_params import SamplingParams
from . import shared_prompts
from .batch_t3 import BatchDecoder
from .request import Request, RequestCancelled, RequestHandle
from .rng import wait_for_device
from .state import EngineStats, _Running
from .admission import Admission
from .audio_worker import AudioWorker, window_due
from .cfm_graph import warm_flow_graphs
from .warmup import BackgroundWarmup, default_filter_flags, warm_bursts
from .gpu_turns import GpuTurns
from .postprocess import Postprocess
from .t3_runner import clean_speech_tokens

FIRST_AUDIO_HOLD_S = 0.5  # the longest decode waits for first windows (EngineConfig.first_audio_priority)
# An idle engine admits a burst together: after an arrival it waits up to GATHER_GAP_S for the next one, at most
# GATHER_MAX_S in all. Admitted one by one, a burst's streams reached their first windows a decode round apart
# and rendered them in separate batches (16 streams on an H100: first audio ~350 ms instead of ~250 ms).
GATHER_GAP_S = 0.002
GATHER_MAX_S = 0.010


class Engine(Admission):
    """Continuous batching over `max_batch` KV slots of `slot_len` positions. Use `TTS.engine` rather than
    building one: it is started on first use and shares the TTS's weights and voice cache."""

    def __init__(self, tts, max_batch: int | None = None, slot_len: int | None = None):
        if tts.plan.offload:
            raise ValueError("the offload memory plan runs one request at a time; use generate() or another plan")
        self.tts = tts
        cfg = tts.config
        self.slot_len = slot_len or cfg.kv_slot_len
        self.rows_per_slot = 2 if tts.family.cfg_pair else 1  # a CFG pair, or one row (Turbo)
        self.max_batch = max_batch or cfg.max_batch or self._auto_batch()
        self.stats = EngineStats()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[_Running] = deque()
        self._running: dict[int, _Running] = {}
        self._finished: list[_Running] = []
        self._stop = threading.Event()
        self._drain = True
        self._wake = threading.Event()
        self.post = Postprocess(self)
        self._ready = threading.Event()
        self.turns = GpuTurns(tts.config.overlap_audio)
        self._error: BaseException | None = None
        self.decoder: BatchDecoder | None = None
        self.audio: AudioWorker | None = None
        self.warm = BackgroundWarmup(self)
        self._thread = threading.Thread(target=self._main, name="cadence-engine", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _auto_batch(self) -> int:
        """As many slots as fit in half the free VRAM (the rest: S3Gen batches, graphs), at most 64."""
        t3, dev = self.tts.t3, self.tts.device
        c = t3.cfg
        per_slot = 2 * self.rows_per_slot * c.n_layers * self.slot_len * c.dim * t3.dtype.itemsize
        if dev.type != "cuda":
            return 8
        free, _ = torch.cuda.mem_get_info(dev)
        return max(1, min(64, int(0.5 * free // per_slot)))

    # --- caller side ---------------------------------------------------------------------------------------
    def submit(self, request: Request) -> RequestHandle:
        """Queue a request; returns its handle (iterate it, sync or async, for `AudioChunk`s)."""
        if self._stop.is_set():
            raise RuntimeError("the engine is shut down")
        if not isinstance(request.params, SamplingParams):
            raise ValueError("request.params must be a SamplingParams")
        request.params.check_family(self.tts.family)
        request.voice = self.tts.voice_or_default(request.voice)  # None: the built-in voice, as generate()
        self.tts.with_voice_language(request.params, request.voice)
        if request.params.seed is None:
            request.params.seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1)
        ids = self.tts.text_ids(request.text, request.params.language)
        if request.params.max_new_tokens > self.tts.t3.cfg.max_speech_tokens:
            raise ValueError(f"max_new_tokens={request.params.max_new_tokens} exceeds this model's "
                             f"{self.tts.t3.cfg.max_speech_tokens} speech positions")
        need = self.prefill_len(len(ids)) + request.params.max_new_tokens + self.tts.config.eos_check_every
        if need > self.slot_len:
            raise ValueError(f"text of {len(ids)} tokens plus max_new_tokens={request.params.max_new_tokens} needs "
                             f"{need} KV positions; this engine's slots hold {self.slot_len} (kv_slot_len)")
        handle = RequestHandle(request)
        handle.input_tokens = len(ids)
        self._inbox.put(_Running(handle, ids))
        self._wake.set()
        return handle

    def call(self, fn):
        """Run `fn()` on the GPU thread between decode steps (voice preparation, graph capture: work that must
        not race the engine's CUDA graphs); returns a concurrent.futures.Future of its result."""
        future: Future = Future()
        self._inbox.put(("call", fn, future))
        self._wake.set()
        return future

    def on_gpu_thread(self) -> bool:
        """True when called from the engine's own GPU thread (inside `call`)."""
        return threading.current_thread() is self._thread

    def warmup(self, max_new_tokens: int = 1000, background: bool = False, first_graphs_s: float = 0.0) -> None:
        """Capture now what the first requests would otherwise capture: every T3 decode graph (batch size x
        attention length), the single-request CFM graphs for outputs of up to `max_new_tokens` tokens and the
        batched ones of streaming windows; then warm-up bursts of requests (`warmup.warm_bursts`). With
        `background`, capture them while serving instead (`warmup.BackgroundWarmup`; `load` says how many are
        left as `warming`), first the decode graphs a first burst of requests steps through
        (`warmup.first_traffic`), and return once those are captured or after `first_graphs_s` seconds (0: at
        once; `cadence serve` answers ready once they are, waiting at most 3 s)."""
        if isinstance(first_graphs_s, bool) or not isinstance(first_graphs_s, (int, float)) \
                or not 0 <= first_graphs_s <= 600:
            raise ValueError(f"first_graphs_s must be seconds in [0, 600], got {first_graphs_s!r}")
        if background:
            self.call(lambda: self.warm.plan(max_new_tokens)).result()
            self.warm.wait_first(first_graphs_s)
            return
        self.call(lambda: self._warmup(max_new_tokens)).result()
        if self.tts.device.type == "cuda":  # the CPU has no device allocator to warm
            warm_bursts(self)

    def _warmup(self, max_new_tokens: int) -> None:
        self.decoder.warmup(flags=default_filter_flags(self.tts.family))  # Turbo's defaults use top-k and top-p
        warm_flow_graphs(self.tts, max_new_tokens, self.max_batch)

    def prefill_len(self, n_text_ids: int) -> int:
        """KV positions the prompt of a request with this many text ids takes (at most)."""
        return self.tts.t3.prompt_positions(n_text_ids)

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the engine; with `drain`, requests already submitted finish first, else they are cancelled."""
        self._drain = drain
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self.post.shutdown()

    @property
    def load(self) -> dict:
        return {"running": len(self._running), "waiting": len(self._waiting) + self._inbox.qsize(),
                "max_batch": self.max_batch, "cancelled": self.stats.cancelled,
                "warming": self.warm.pending if self.decoder is not None else 0}

    # --- the GPU thread ------------------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            if self.tts.device.type == "cuda" and self.tts.device.index is not None:
                torch.cuda.set_device(self.tts.device)
            self.decoder = BatchDecoder(self.tts.t3, self.max_batch, self.slot_len, self.tts.t3_runner.use_graphs,
                                        self.rows_per_slot, shared_prompts.shared_voices(self.tts.t3))
            self.audio = AudioWorker(self)
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor's caller
            self._error = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
            self._ready.set()
            return
        self._ready.set()
        while True:
            self._collect()
            if self.warm.pending and not self._stop.is_set():  # background captures: one between rounds, back
                with self.turns.turn():                             # to back while quiet; none once closing
                    self.warm.run_one(busy=not self._quiet(), audio_busy=self.audio.busy)
                    while self.warm.pending and self._quiet() and self._inbox.empty() and not self._stop.is_set():
                        if not self.warm.run_one():
                            break
            if self._stop.is_set() and (not self._drain or not (self._waiting or self._running or self._finished
                                                                 or self.audio.busy)):
                break
            try:
                with self.turns.turn(urgent=self._newcomers()):
                    self._schedule()
                    # the decode round follows in the same turn, unless first windows are to render before it
                    decoded = bool(self._running) and not self._hold_for_first_audio()
                    if decoded:
                        self._decode()
                if self._running and not decoded:
                    self.audio.first.wait(FIRST_AUDIO_HOLD_S)
                    with self.turns.turn(urgent=self._newcomers()):
                        self._decode()
                if self._finished:  # S3Gen runs on the audio worker, alongside the next decode steps
                    self.audio.finished(self._finished)
                    self._finished = []
            except Exception as exc:  # noqa: BLE001 - a failed step fails the requests in it, not the engine
                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
                for slot, r in list(self._running.items()):
                    self.decoder.free(slot)
                    self._fail(r, exc)
                for r in self._finished:
                    self._fail(r, exc)
                self._running.clear()
                self._finished.clear()
        self.audio.close()
        for r in [*self._waiting, *self._running.values(), *self._finished]:
            r.handle._fail(RequestCancelled("the engine shut down"))

    def _newcomers(self) -> bool:
        """A stream waits for its admission (with a slot free for it) or its first window: the GPU turns it needs
        are urgent (`GpuTurns`)."""
        return self.tts.config.first_audio_priority and (
            (len(self._running) < self.max_batch and any(r.handle.request.stream for r in self._waiting))
            or any(r.stream is not None and not r.windows for r in self._running.values()))

    def _hold_for_first_audio(self) -> bool:
        """Decode waits for first windows being rendered (`EngineConfig.first_audio_priority`)."""
        return self.tts.config.first_audio_priority and self.audio.first.holds

    def _idle(self) -> bool:
        return not (self._waiting or self._running or self._finished)

    def _quiet(self) -> bool:
        """No request anywhere on the GPU: none in T3 and no S3Gen work (finished requests, stream windows)."""
        return self._idle() and not self.audio.busy

    def _collect(self) -> None:
        idle = self._idle()
        if idle and not self._stop.is_set() and not (self.warm.pending and self._quiet()):
            # with captures pending beside S3Gen work: look again soon (they wait for it, `BackgroundWarmup`)
            self._wake.wait(0.01 if self.warm.pending else 0.1)
        self._wake.clear()
        self._take_inbox()
        if idle and self._waiting:  # the first of a burst: gather the rest (while they keep coming) into one admission
            deadline = time.perf_counter() + GATHER_MAX_S
            while time.perf_counter() < deadline and self._wake.wait(GATHER_GAP_S):
                self._wake.clear()
                self._take_inbox()

    def _take_inbox(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, tuple):  # ("call", fn, future): run here, between steps
                _, fn, future = item
                if future.set_running_or_notify_cancel():
                    try:
                        with self.turns.turn():
                            result = fn()
                            wait_for_device(self.tts.device)
                        future.set_result(result)
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        future.set_exception(exc)
            else:
                self._waiting.append(item)

    def _decode(self) -> None:
        d, t0 = self.decoder, time.perf_counter()
        running = self._running
        b = d.size_for(max(running) + 1)
        params = [r.handle.request.params for r in running.values()]
        flags = (any(p.top_k > 0 for p in params), any(p.top_p < 1.0 for p in params))
        for _ in range(self.tts.config.eos_check_every):
            attend = d.length_for(max(r.prefill_len + r.steps for r in running.values()) + 1)
            d.run_step(b, attend, *flags)
            for r in running.values():
                r.steps += 1
            self.stats.decode_steps += 1
            self.stats.slot_steps += len(running)
            self.stats.capacity_steps += b
        wait_for_device(self.tts.device)  # the one host sync of these steps, the GIL left to the other threads
        done = d.done[:b].tolist()
        now = time.perf_counter()
        for slot, r in list(running.items()):
            limit = r.handle.request.params.max_new_tokens
            if done[slot] or r.steps >= limit:
                tokens = d.tokens(slot, min(r.steps, limit)).tolist()
                stop = self.tts.t3.cfg.stop_speech
                r.tokens = tokens[: tokens.index(stop) + 1] if stop in tokens else tokens
                r.t_t3_done = now
                d.free(slot)
                del running[slot]
                self._finished.append(r)
        self.stats.t3_s += now - t0
        ladder = self.tts.config.stream_windows
        due = [r for r in running.values() if r.stream is not None and window_due(r, ladder)]
        if due:  # streaming requests: S3Gen on the tokens so far, on the audio worker, while T3 goes on
            tokens = [clean_speech_tokens(d.tokens(r.slot, r.steps).tolist()) for r in due]
            self.audio.windows(due, tokens)
            for r in due:
                r.window_steps, r.windows = r.steps, r.windows + 1

    def _cancel(self, r: _Running) -> None:
        self.stats.cancelled += 1
        r.handle._fail(RequestCancelled(f"request {r.handle.request_id} was cancelled"))

    def _fail(self, r: _Running, exc: BaseException) -> None:
        if r.failed:
            return
        r.failed = True
        self.stats.failed += 1
        r.handle._fail(exc)
