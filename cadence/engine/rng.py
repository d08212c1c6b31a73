"""A request's own random streams. The reference draws from torch's global generators; Cadence gives every
request generators seeded from its own seed, used in the same order, so one seed reproduces one result."""

from __future__ import annotations

import torch


class RequestRNG:
    """`device` feeds tensors made on the model's device (sampling noise, CFM noise, source noise); `host`
    feeds the few draws the reference makes on the CPU whatever the device (the vocoder's start phases).
    On a CPU model both are one generator, as the reference's single global CPU stream is."""

    def __init__(self, seed: int, device: torch.device | str):
        device = torch.device(device)
        self.seed = seed
        self.device = torch.Generator(device=device).manual_seed(seed)
        self.host = self.device if device.type == "cpu" else torch.Generator().manual_seed(seed)


def wait_for_device(device: torch.device) -> None:
    """Wait until the current stream's queued work is done, without holding the GIL. A plain `.tolist()` or
    `.cpu()` on a CUDA tensor waits inside a call that keeps the GIL, which would stall the engine's other
    threads (the audio worker, the HTTP server) for as long as the GPU is busy."""
    if torch.device(device).type == "cuda":
        event = torch.cuda.Event()
        event.record()
        event.synchronize()  # releases the GIL while waiting
