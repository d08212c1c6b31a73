"""Cadence's Triton kernels as PyTorch custom ops that cost nothing outside torch.compile.

Under `compile` each kernel must be one opaque op with a known output shape (`torch.library.custom_op` and its
fake). Called eagerly, or while a CUDA graph is captured, the op adds only its dispatch, but its first call also
imports `torch._dynamo`, FSDP and sympy: 3.1 s on a 2-core CPU, about 3 s of a server's load on an H100 (the
decode graph captured at load is the first caller). So a `KernelOp` calls its function directly unless
torch.compile is tracing."""

from __future__ import annotations

from typing import Callable

import torch


class KernelOp:
    """`fn` registered as the custom op `cadence::NAME`; calling the object runs `fn` itself, or the op
    (`torch.ops.cadence.NAME`) while torch.compile traces (the two compute the same thing: the op's body is
    `fn`)."""

    def __init__(self, fn: Callable, op, name: str):
        self.fn, self.op = fn, op
        self.traced = getattr(torch.ops.cadence, name)
        self.__doc__, self.__name__ = fn.__doc__, fn.__name__

    def __call__(self, *args):
        if torch.compiler.is_compiling():
            return self.traced(*args)
        return self.fn(*args)

    def register_fake(self, fake: Callable) -> Callable:
        """The op's output from its inputs' shapes alone (what torch.compile traces with)."""
        self.op.register_fake(fake)
        return fake


def kernel_op(name: str, mutates_args: tuple[str, ...] = ()) -> Callable[[Callable], KernelOp]:
    """Decorator: `fn` (type-annotated, as `torch.library.custom_op` requires) as the op `cadence::name`."""
    def wrap(fn: Callable) -> KernelOp:
        return KernelOp(fn, torch.library.custom_op(f"cadence::{name}", mutates_args=mutates_args)(fn), name)
    return wrap
