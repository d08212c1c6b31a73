"""An encoder process: the server's mp3/opus/aac/flac encoding outside the engine's interpreter.

FFmpeg's codecs release the interpreter lock, but each response's frames, packets and muxer writes are Python
calls that take it back hundreds of times per clip; beside a GPU engine, whose launch-bound threads give the lock
up and take it back at every torch call, each of those hand-overs is a wait for them. In a process of its own the
encoding costs the engine nothing. The server's `EncodePool` starts a few and binds each response to one; the
worker holds that response's `StreamEncoder` (keyed by stream id) from its first samples to its last.

A request is REQUEST_FRAME (op WRITE, FINISH or DROP; stream id; format; sample rate; n samples) and n float32
samples; the reply (`cadence.pipe_worker`'s framing) is OK and the encoded bytes ready so far, or FAILED and a
message. Imports numpy and PyAV only (no torch): a worker starts in well under a second.

Usage: python -m cadence.audio.encode_worker [--nice K]"""

from __future__ import annotations

import argparse
import struct
from typing import BinaryIO

import numpy as np

from ..pipe_worker import FAILED, OK, UNAVAILABLE, lower_priority, read_exact, reply, worker_pipes

REQUEST_FRAME = struct.Struct("<BQ8sIQ")  # op, stream id, format (ascii, padded), sample rate, samples that follow
WRITE, FINISH, DROP = 1, 2, 3


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """Say whether PyAV loads, then encode until `inp` ends. Returns the exit status."""
    from .encode import StreamEncoder, format_unavailable

    reason = format_unavailable("mp3")
    if reason:
        reply(out, UNAVAILABLE, reason)
        return 0
    reply(out, OK)
    streams: dict[int, StreamEncoder] = {}
    while True:
        head = read_exact(inp, REQUEST_FRAME.size)
        op, sid, fmt, rate, n = REQUEST_FRAME.unpack(head) if head is not None else (None, 0, b"", 0, 0)
        raw = read_exact(inp, 4 * n) if head is not None else None
        if raw is None:
            return 0
        try:
            if op == DROP:  # answered with the number of responses still open here (ascii)
                streams.pop(sid, None)
                reply(out, OK, str(len(streams)))
                continue
            if sid not in streams:
                streams[sid] = StreamEncoder(fmt.rstrip(b"\0").decode("ascii"), rate)
            samples = np.frombuffer(raw, dtype=np.float32)
            data = streams.pop(sid).finish(samples) if op == FINISH else streams[sid].write(samples)
            reply(out, OK, data)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails that response alone
            streams.pop(sid, None)
            reply(out, FAILED, f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadence.audio.encode_worker", description=__doc__)
    parser.add_argument("--nice", type=int, default=0, help="nice increment (below the engine's GPU threads)")
    args = parser.parse_args(argv)
    inp, out = worker_pipes()
    lower_priority(args.nice)
    return serve(inp, out)


if __name__ == "__main__":
    raise SystemExit(main())
