"""One answer to a batch that runs out of GPU memory, wherever the engine batches (padded prefills, S3Gen
batches, stream windows): free the cache and run each item alone, so only an item that cannot fit even alone
fails, and every other one gets exactly what its seed gives."""

from __future__ import annotations

import torch


def retry_alone_on_oom(run, n: int, rngs=()) -> list[tuple[list[int], object]]:
    """run(indices) over all n items as one batch; on a CUDA OOM, each item alone, with the random streams in
    `rngs` (one per item, or none when `run` draws nothing) put back as they were before the batch.
    -> [(indices, run's result or the exception)]; any other exception fails the whole batch."""
    saved = [(g.device.get_state(), g.host.get_state()) for g in rngs]
    try:
        return [(list(range(n)), run(list(range(n))))]
    except Exception as exc:  # noqa: BLE001 - handed back: those items fail, the engine goes on
        if n == 1 or not isinstance(exc, torch.cuda.OutOfMemoryError):
            return [(list(range(n)), exc)]
    torch.cuda.empty_cache()
    groups = []
    for i in range(n):
        if saved:
            g, (dev_state, host_state) = rngs[i], saved[i]
            g.device.set_state(dev_state)
            g.host.set_state(host_state)
        try:
            groups.append(([i], run([i])))
        except Exception as exc:  # noqa: BLE001
            groups.append(([i], exc))
    return groups
