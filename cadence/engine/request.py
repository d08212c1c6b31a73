"""What callers hand the engine and what they get back: `Request` in, `AudioChunk`s out through a
`RequestHandle` that is both a blocking and an async iterator, and can cancel."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from ..outputs import Audio
from ..sampling_params import SamplingParams
from ..voices.voice import Voice


@dataclass
class Request:
    text: str
    voice: Voice | None
    """None: the checkpoint's built-in voice."""
    params: SamplingParams = field(default_factory=SamplingParams)
    """Knobs of this request alone; `params.seed` None draws a fresh seed at submission."""
    watermark: bool | None = None
    """Perth watermark (None: the model's default)."""
    speech_tokens_only: bool = False
    """Mask T3 ids that are neither speech tokens nor EOS (benchmarks on random weights)."""
    ignore_eos: bool = False
    """Benchmarks: never sample EOS, so exactly `max_new_tokens` tokens are generated."""
    stream: bool = False
    """Deliver audio in chunks while T3 is still decoding (S3Gen on token windows), not one chunk at the end."""
    speed: float = 1.0
    """Speaking rate, 0.25-4 (the mel stretched in time before the vocoder: same pitch). See `audio.speed`."""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def __post_init__(self):
        from ..audio.speed import check_speed
        self.speed = check_speed(self.speed)


@dataclass
class AudioChunk:
    request_id: str
    samples: np.ndarray
    """Mono float32 samples of this chunk."""
    sample_rate: int
    index: int
    """0, 1, 2, ... in playback order."""
    final: bool
    """The request's last chunk."""
    tokens: list[int] = field(default_factory=list)
    """Speech tokens this chunk rendered."""
    watermarked: bool = False
    timings: dict = field(default_factory=dict)
    """On the final chunk: queue, t3, s3gen, postprocess and total seconds; t3 tokens and batch sizes."""


class RequestCancelled(Exception):
    """The request was cancelled before it finished."""


_END = object()


class RequestHandle:
    """The caller's side of a submitted request. Iterate (sync or async) for its `AudioChunk`s; `result()`
    waits for the whole `Audio`; `cancel()` frees its engine slot at the next step."""

    def __init__(self, request: Request):
        self.request = request
        self.submitted = time.perf_counter()
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._finished = False
        self.input_tokens = 0
        """Text tokens the engine decodes from (set when it is submitted): the usage a server reports."""

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # --- engine side ---------------------------------------------------------------------------------------
    def _put(self, item) -> None:
        self._items.put(item)
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the caller's loop is closed: nobody is listening any more
                pass

    def _deliver(self, chunk: AudioChunk) -> None:
        self._put(chunk)
        if chunk.final:
            self._put(_END)

    def _fail(self, exc: BaseException) -> None:
        self._put(exc)
        self._put(_END)

    # --- caller side -----------------------------------------------------------------------------------------
    def _take(self, item):
        if item is _END:
            self._finished = True
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def __iter__(self):
        return self

    def __next__(self) -> AudioChunk:
        if self._finished:
            raise StopIteration
        return self._take(self._items.get())

    def __aiter__(self):
        return self

    async def __anext__(self) -> AudioChunk:
        if self._finished:
            raise StopAsyncIteration
        if self._loop is None:
            self._wake = asyncio.Event()
            self._loop = asyncio.get_running_loop()
        while True:
            try:
                item = self._items.get_nowait()
                break
            except queue.Empty:
                self._wake.clear()
                try:  # re-check: an item may have landed before the clear
                    item = self._items.get_nowait()
                    break
                except queue.Empty:
                    await self._wake.wait()
        try:
            return self._take(item)
        except StopIteration:
            raise StopAsyncIteration from None

    def result(self, timeout: float | None = None) -> Audio:
        """Block until the request finishes; all chunks joined into one `Audio`."""
        chunks = []
        deadline = None if timeout is None else time.perf_counter() + timeout
        while not self._finished:
            wait = None if deadline is None else max(0.0, deadline - time.perf_counter())
            try:
                item = self._items.get(timeout=wait)
            except queue.Empty:
                raise TimeoutError(f"request {self.request_id} did not finish in {timeout} s") from None
            try:
                chunks.append(self._take(item))
            except StopIteration:
                break
        return join_chunks(chunks)


def join_chunks(chunks: list[AudioChunk]) -> Audio:
    samples = np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.float32)
    last = chunks[-1] if chunks else None
    return Audio(samples=samples.astype(np.float32), sample_rate=last.sample_rate if last else 24000,
                 tokens=[t for c in chunks for t in c.tokens], watermarked=bool(last and last.watermarked),
                 timings=dict(last.timings) if last else {})
