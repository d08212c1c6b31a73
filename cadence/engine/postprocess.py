"""The engine's postprocess stage, off the GPU threads: watermarking, timings and the delivery of each chunk to
its request's handle; after a request's last chunk, freed host memory goes back to the OS (at most every few
seconds).

The Perth watermark is CPU work (0.1-0.2 s for a 30 s clip on a server core), so it runs on several lanes, one
thread each, sized to the machine: a request's chunks all go through one lane (in order), different requests
through different lanes (side by side), so one long clip's watermark never holds up another request's audio.
Beside a GPU engine each lane hands its chunks to a worker process of its own (`watermark_pool`): in the engine's
process the watermark's Python would slow the launch-bound GPU threads down."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import watermark as wm
from ..pipe_worker import close_all, wait_all_ready
from .cpu_priority import helper_nice, lower_beside_gpu
from .host_memory import HostTrimmer
from .request import AudioChunk
from .state import _Running
from .watermark_pool import WatermarkWorker, lane_count, lane_team, prestart, start_workers


def watermark_in_workers(device, watermark: bool, watermark_device: str) -> bool:
    """The default (`Postprocess.worker_processes` None): worker processes when the engine runs on a GPU and the
    watermark, on by default, on the CPU."""
    if Postprocess.worker_processes is not None:
        return Postprocess.worker_processes
    return getattr(device, "type", str(device)) == "cuda" and str(watermark_device) == "cpu" and bool(watermark)


def prestart_watermark_workers(device, watermark: bool, watermark_device: str) -> bool:
    """Start the watermark workers an engine on `device` will use before the engine exists (a server calls this
    as its checkpoint starts loading); True when it wants them."""
    if not watermark_in_workers(device, watermark, watermark_device):
        return False
    n = lane_count()
    prestart(n, lane_team(n), helper_nice(device))
    return True


class Postprocess:
    worker_processes: bool | None = None
    """Watermark in worker processes, one per lane. None: when the engine runs on a GPU, the watermark on the CPU
    and on by default (a request that turns it on beside an engine where it is off is marked in-process); True or
    False force it (tests, A/B runs)."""

    def __init__(self, engine, lanes: int | None = None):
        self.engine = engine
        # beside a GPU engine, below its threads on the CPU (`cpu_priority`): the watermark must not delay a step
        n = lanes or lane_count()
        team = lane_team(n)  # each lane's torch work in a team of its own
        self._lanes = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cadence-post-{i}",
                                          initializer=lower_beside_gpu, initargs=(engine.tts.device, team))
                       for i in range(n)]
        self._next = 0
        self._trimmer = HostTrimmer()
        self.workers: list[WatermarkWorker] = start_workers(n, team, helper_nice(engine.tts.device)) \
            if self._use_workers(engine.tts) else []

    def _use_workers(self, tts) -> bool:
        return watermark_in_workers(tts.device, tts.watermark, tts.watermark_device)

    def wait_workers(self, timeout: float) -> bool:
        """Wait, at most `timeout` s in all, until every watermark worker can work; True when they can (or there
        are none). Until then a lane marks its chunks in this process, beside the engine's threads."""
        return wait_all_ready([w.process for w in self.workers], timeout)

    def submit(self, r: _Running, wav: np.ndarray, speech: list[int], s3_s: float, final: bool) -> None:
        """Queue one chunk of `r` (its samples; speech tokens and S3Gen seconds, reported with the final one) on
        the request's lane, assigned round-robin at its first chunk."""
        if r.lane is None:
            r.lane, self._next = self._next % len(self._lanes), self._next + 1
        self._lanes[r.lane].submit(self._emit, r, wav, speech, s3_s, final)

    def shutdown(self) -> None:
        for lane in self._lanes:
            lane.shutdown(wait=True)
        close_all([worker.process for worker in self.workers])

    def _mark(self, lane: int, wav: np.ndarray, tts) -> tuple[np.ndarray, bool]:
        done = self.workers[lane].apply(wav, tts.sample_rate) if self.workers else None
        return done if done is not None else wm.apply(wav, tts.sample_rate, tts.watermark_device)

    def _emit(self, r: _Running, wav: np.ndarray, speech: list[int], s3_s: float, final: bool) -> None:
        if r.failed:  # its caller has the error already
            return
        eng = self.engine
        try:
            req, tts = r.handle.request, eng.tts
            t0 = time.perf_counter()
            marked = False
            if (tts.watermark if req.watermark is None else req.watermark) and wav.size:
                wav, marked = self._mark(r.lane, wav, tts)
            now = time.perf_counter()
            if not r.t_first_audio:
                r.t_first_audio = now
            timings = {"queue": r.t_admit - r.handle.submitted, "t3": r.t_t3_done - r.t_admit, "s3gen": s3_s,
                       "postprocess": now - t0, "total": now - r.handle.submitted, "t3_tokens": len(r.tokens),
                       "first_audio": r.t_first_audio - r.handle.submitted} if final else {}
            eng.stats.finished += int(final)
            r.handle._deliver(AudioChunk(req.request_id, wav.astype(np.float32), tts.sample_rate, r.chunks,
                                         final, speech if final else [], marked, timings))
            r.chunks += 1
            if final:
                self._trimmer.maybe_trim()
        except Exception as exc:  # noqa: BLE001 - reported to the request's caller
            eng._fail(r, exc)
