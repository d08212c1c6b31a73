"""Padded sizes: the engine pads batches to a few shapes, so CUDA graphs and cuDNN plans are made once per
bucket instead of once per request length."""

from __future__ import annotations

import math


def round_up(n: int, bucket: int) -> int:
    """The smallest multiple of `bucket` that is >= n."""
    return -(-n // bucket) * bucket


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 2 ** math.ceil(math.log2(n))
