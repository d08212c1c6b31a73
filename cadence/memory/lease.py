"""Lending weights to the GPU only while they are needed: the voice-preparation encoders between preparations,
and, under sequential offload, T3 and S3Gen in turn.

A lease's tensors are packed once, at load, into one pinned host buffer per group. Lending copies each group
with a single transfer on a copy stream into one device buffer; compute waits on the GPU (never the host) for
a group only when one of its modules first runs, so the transfer of later groups (T3's upper layers, the CFM
estimator, the vocoder) overlaps the compute of earlier ones. The host buffers stay the source of truth:
nothing is copied back."""

from __future__ import annotations

import torch
from torch import nn

from ..engine.shapes import round_up

ALIGN = 256  # bytes: every tensor starts on a boundary any kernel (Triton int8, cuBLAS, cuDNN) accepts


class _Group:
    """The tensors of one transfer unit, their host buffer, and where each lives inside it."""

    def __init__(self, slots: list[tuple[nn.Module, str, str, torch.Tensor]], pin: bool):
        # (owner, "_parameters" or "_buffers", name, byte offset, byte size, shape, dtype)
        self.slots: list[tuple[nn.Module, str, str, int, int, torch.Size, torch.dtype]] = []
        offsets: dict[int, int] = {}  # id(tensor) -> byte offset; a tensor shared by two modules is stored once
        total = 0
        for _, _, _, t in slots:
            if id(t) not in offsets:
                offsets[id(t)] = total
                total += round_up(t.numel() * t.element_size(), ALIGN)
        self.nbytes = max(total, ALIGN)
        self.host = torch.empty(self.nbytes, dtype=torch.uint8, pin_memory=pin)
        for owner, kind, name, t in slots:
            slot = (owner, kind, name, offsets[id(t)], t.numel() * t.element_size(), t.shape, t.dtype)
            self.slots.append(slot)
            self._view(self.host, *slot[3:]).copy_(t.detach())
        self.bind(self.host)

    @staticmethod
    def _view(buf: torch.Tensor, off: int, n: int, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        return buf[off:off + n].view(dtype).view(shape)

    def bind(self, buf: torch.Tensor) -> None:
        """Point every module tensor of this group at its place in `buf` (the host buffer or a device copy)."""
        for owner, kind, name, *place in self.slots:
            t = self._view(buf, *place)
            getattr(owner, kind)[name] = nn.Parameter(t, requires_grad=False) if kind == "_parameters" else t


class OnDemand:
    """Keeps `modules`' weights in (pinned) CPU memory and lends them to `device` only inside `with lease:`.

    `pipeline`: submodules of `modules`, in the order compute first uses them, each lent as its own group after
    the rest (group 0, which the lease waits for on entry). Their modules wait for their own group's transfer,
    on the GPU, when they first run."""

    def __init__(self, modules: list[nn.Module], device: torch.device, pipeline: list[nn.Module] = ()):
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        owner_group: dict[int, int] = {}
        for i, p in enumerate(pipeline, start=1):
            for sub in p.modules():
                owner_group[id(sub)] = i
        slots: list[list] = [[] for _ in range(len(pipeline) + 1)]
        seen: set[tuple[int, str, str]] = set()
        for m in modules:
            for sub in m.modules():
                for kind in ("_parameters", "_buffers"):
                    for name, t in getattr(sub, kind).items():
                        if t is not None and (id(sub), kind, name) not in seen:
                            seen.add((id(sub), kind, name))
                            slots[owner_group.get(id(sub), 0)].append((sub, kind, name, t))
        self.groups = [_Group(s, pin=cuda) for s in slots]
        self.copy_stream = torch.cuda.Stream(self.device) if cuda else None
        self._pending: dict[int, torch.cuda.Event] = {}
        for i, p in enumerate(pipeline, start=1):
            for sub in p.modules():
                sub.register_forward_pre_hook(self._waiter(i))

    @property
    def nbytes(self) -> int:
        return sum(g.nbytes for g in self.groups)

    def _waiter(self, group: int):
        def hook(module, args):
            event = self._pending.pop(group, None)
            if event is not None:
                if torch.cuda.is_current_stream_capturing():
                    event.synchronize()  # a capture cannot wait on outside work; the host can
                else:
                    torch.cuda.current_stream(self.device).wait_event(event)
        return hook

    def __enter__(self):
        if self.copy_stream is None:
            for g in self.groups:
                g.bind(g.host.to(self.device, copy=True))
            return self
        compute = torch.cuda.current_stream(self.device)
        # The device buffers are allocated for the compute stream and may reuse memory its queued kernels still
        # read: the copies start only after them.
        self.copy_stream.wait_stream(compute)
        for i, g in enumerate(self.groups):
            buf = torch.empty(g.nbytes, dtype=torch.uint8, device=self.device)
            with torch.cuda.stream(self.copy_stream):
                buf.copy_(g.host, non_blocking=True)
                done = torch.cuda.Event()
                done.record(self.copy_stream)
            g.bind(buf)
            self._pending[i] = done
        compute.wait_event(self._pending.pop(0))
        return self

    def __exit__(self, *exc):
        if self.copy_stream is not None:
            compute = torch.cuda.current_stream(self.device)
            for event in self._pending.values():  # groups never used: their buffers are freed only after the copy
                compute.wait_event(event)
            self._pending.clear()
        for g in self.groups:
            g.bind(g.host)
        return False
