"""A watermark worker process: the Perth watermark on the CPU, outside the engine's interpreter.

Beside a GPU engine the audio thread is launch-bound (its CPU time is close to its wall time), so Python work
holding the same interpreter lock slows it down: on an H100 the watermark as threads in the engine's process
halved Turbo's throughput at 64 clients. In a process of its own the watermark's Python runs beside the engine,
not between its kernel launches. `watermark_pool` starts one worker per postprocess lane.

Protocol, over the worker's stdin and stdout (stdout carries nothing else: anything the worker or Perth prints
goes to stderr):
- once, worker -> parent: READY_FRAME (status 1: Perth loaded; 0: unavailable, followed by the reason);
- per chunk, parent -> worker: REQUEST_FRAME (sample rate, n samples) + n float32 samples;
  worker -> parent: REPLY_FRAME (MARKED / UNMARKED + n float32 samples, or FAILED + n bytes of message).
The worker exits when its stdin closes (the parent shut the pool down, or died).

Usage: python -m cadence.engine.watermark_worker [--threads N] [--nice K] (the pool starts it through -c, so the
package's own import of this module is not run twice)."""

from __future__ import annotations

import argparse
import os
import struct
import sys
from typing import BinaryIO

import numpy as np

REQUEST_FRAME = struct.Struct("<IQ")  # sample rate, samples that follow
REPLY_FRAME = struct.Struct("<BQ")  # status, samples (or message bytes) that follow
READY_FRAME = REPLY_FRAME
UNMARKED, MARKED, FAILED = 0, 1, 2


def read_exact(stream: BinaryIO, n: int) -> bytes | None:
    """`n` bytes from `stream`, or None at end of stream (a partial frame counts as the end)."""
    parts, left = [], n
    while left:
        part = stream.read(left)
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_samples(stream: BinaryIO, n: int) -> np.ndarray | None:
    raw = read_exact(stream, 4 * n)
    return None if raw is None else np.frombuffer(raw, dtype=np.float32)


def send_message(stream: BinaryIO, status: int, message: str) -> None:
    data = message.encode("utf-8", "replace")
    stream.write(REPLY_FRAME.pack(status, len(data)) + data)
    stream.flush()


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """Load Perth, say so, then mark chunks until `inp` ends. Returns the exit status."""
    from cadence import watermark as wm  # noqa: PLC0415 - after the worker's threads and priority are set

    if not wm.preload("cpu"):
        send_message(out, UNMARKED, wm.unavailable_reason())
        return 0
    out.write(READY_FRAME.pack(MARKED, 0))
    out.flush()
    while True:
        head = read_exact(inp, REQUEST_FRAME.size)
        if head is None:
            return 0
        sample_rate, n = REQUEST_FRAME.unpack(head)
        wav = read_samples(inp, n)
        if wav is None:
            return 0
        try:
            marked_wav, marked = wm.apply(wav.copy(), sample_rate, "cpu")
            marked_wav = np.ascontiguousarray(marked_wav, dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which marks the chunk itself
            send_message(out, FAILED, f"{type(exc).__name__}: {exc}")
            continue
        out.write(REPLY_FRAME.pack(MARKED if marked else UNMARKED, marked_wav.size))
        out.write(memoryview(marked_wav).cast("B"))
        out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadence.engine.watermark_worker", description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for Perth's STFT and network")
    parser.add_argument("--nice", type=int, default=0, help="nice increment (below the engine's GPU threads)")
    args = parser.parse_args(argv)
    # the protocol keeps its own copies of the pipes; fd 1 then points at stderr, so no print reaches the parent
    inp, out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    if args.nice > 0 and hasattr(os, "nice"):
        try:
            os.nice(args.nice)
        except OSError:
            pass
    import torch  # noqa: PLC0415

    torch.set_num_threads(max(1, args.threads))
    return serve(inp, out)


if __name__ == "__main__":
    sys.exit(main())
