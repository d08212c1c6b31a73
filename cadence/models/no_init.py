"""Building networks whose weights come from files next: torch.nn.init's functions leave tensors alone while a
thread is inside `uninitialised()`, so a full-size model's parameters are allocated but never written (no page
touched) before the files' tensors replace them."""

from __future__ import annotations

import contextlib
import functools
import threading

_INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
          "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")
_inside = threading.local()


def _install() -> None:
    """Wrap the initialisers once: each leaves its tensor unchanged in a thread inside `uninitialised()` and
    behaves as before in every other thread."""
    from torch.nn import init
    if getattr(init, "_cadence_skips", False):
        return

    def skipping(fn):
        @functools.wraps(fn)
        def init_fn(tensor, *args, **kwargs):
            return tensor if getattr(_inside, "on", False) else fn(tensor, *args, **kwargs)
        return init_fn
    for name in _INITS:
        setattr(init, name, skipping(getattr(init, name)))
    init._cadence_skips = True


@contextlib.contextmanager
def uninitialised():
    _install()
    outer = getattr(_inside, "on", False)
    _inside.on = True
    try:
        yield
    finally:
        _inside.on = outer
