"""A watermark worker process: the Perth watermark on the CPU, outside the engine's interpreter.

Beside a GPU engine the audio thread is launch-bound (its CPU time is close to its wall time), so Python work
holding the same interpreter lock slows it down: on an H100 the watermark as threads in the engine's process
halved Turbo's throughput at 64 clients. In a process of its own the watermark's Python runs beside the engine,
not between its kernel launches. `watermark_pool` starts one worker per postprocess lane (`cadence.pipe_worker`
has the framing): a request is REQUEST_FRAME (sample rate, n samples) and n float32 samples; the reply is OK (or
UNAVAILABLE: not marked) and the marked float32 samples, or FAILED and a message.

Usage: python -m cadence.engine.watermark_worker [--threads N] [--nice K]"""

from __future__ import annotations

import argparse
import struct
from typing import BinaryIO

import numpy as np

from ..pipe_worker import FAILED, OK, UNAVAILABLE, lower_priority, read_exact, reply, worker_pipes

REQUEST_FRAME = struct.Struct("<IQ")  # sample rate, samples that follow
WARM_RATE = 24000  # models.s3gen.S3GEN_SR (that package is not imported here): a request's resampling path


def warm(wm) -> None:
    """Mark a quarter second of quiet noise once, so the first request does not pay for the first call's lazy
    imports and allocations (the resampler, torch's first STFT and convolutions). Runs after the worker said it is
    ready: it delays no start, and a request that comes meanwhile waits for it only as long as it has left."""
    quiet = (0.01 * np.random.default_rng(0).standard_normal(WARM_RATE // 4)).astype(np.float32)
    try:
        wm.apply(quiet, WARM_RATE, "cpu")
    except Exception:  # noqa: BLE001 - a failure shows in the first real request's reply, with its message
        pass


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """Load Perth, say so, then mark chunks until `inp` ends. Returns the exit status."""
    from .. import watermark as wm  # noqa: PLC0415 - after the worker's threads and priority are set

    if not wm.preload("cpu"):
        reply(out, UNAVAILABLE, wm.unavailable_reason())
        return 0
    reply(out, OK)
    warm(wm)
    while True:
        head = read_exact(inp, REQUEST_FRAME.size)
        raw = None if head is None else read_exact(inp, 4 * REQUEST_FRAME.unpack(head)[1])
        if raw is None:
            return 0
        try:
            marked_wav, marked = wm.apply(np.frombuffer(raw, dtype=np.float32).copy(), REQUEST_FRAME.unpack(head)[0],
                                          "cpu")
            reply(out, OK if marked else UNAVAILABLE, np.ascontiguousarray(marked_wav, dtype=np.float32))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which marks the chunk itself
            reply(out, FAILED, f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadence.engine.watermark_worker", description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for Perth's STFT and network")
    parser.add_argument("--nice", type=int, default=0, help="nice increment (below the engine's GPU threads)")
    args = parser.parse_args(argv)
    inp, out = worker_pipes()
    lower_priority(args.nice)
    import torch  # noqa: PLC0415

    torch.set_num_threads(max(1, args.threads))
    return serve(inp, out)


if __name__ == "__main__":
    raise SystemExit(main())
