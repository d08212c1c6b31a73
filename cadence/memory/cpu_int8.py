"""Dynamic int8 for the CPU: linear layers swapped for `DynamicInt8Linear`, whose weight is int8 (one scale per
output channel, packed once for FBGEMM) and whose input is quantised to 8 bits per call, so the matmul runs on
the CPU's integer dot products. For T3's decode (one or two rows) the step reads a quarter of fp32's bytes; for
the flow's larger matmuls the integer kernels do more work per cycle. Only x86 builds of PyTorch carry FBGEMM:
elsewhere `available()` is False and the CPU plans keep fp32 linears."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn



@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether this PyTorch build has the FBGEMM kernels (x86 builds do)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_vnni(flags: set[str] | None = None) -> bool:
    """VNNI's dot product accumulates u8 x s8 pairs in 32 bits; without it the AVX2 path adds pairs in 16 bits
    with saturation, which 7-bit activations (`reduce_range`) keep clear of."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


class DynamicInt8Linear(nn.Module):
    """y = x W^T + b with W int8 per output channel and x quantised per call (per tensor, asymmetric)."""

    def __init__(self, packed, in_features: int, out_features: int, reduce_range: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.packed = packed
        self.reduce_range = reduce_range

    @classmethod
    def from_linear(cls, linear: nn.Linear, reduce_range: bool) -> "DynamicInt8Linear":
        w = linear.weight.detach().float()
        scales = (w.abs().amax(dim=1).clamp(min=1e-8) / 127.0).double()
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        bias = None if linear.bias is None else linear.bias.detach().float()
        with warnings.catch_warnings():  # quantised tensor types are marked for removal; the kernels are not yet
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(w, scales, zero, 0, torch.qint8)
            packed = torch.ops.quantized.linear_prepack(qweight, bias)
        return cls(packed, linear.in_features, linear.out_features, reduce_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x.float(), self.packed, self.reduce_range).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 dynamic (FBGEMM)"


def quantize_dynamic_int8_(module: nn.Module, include=lambda name: True) -> int:
    """Swap every nn.Linear of `module` whose qualified name passes `include` for a DynamicInt8Linear; -> how many.
    The module must be on the CPU."""
    if not available():
        raise ValueError("dynamic int8 needs PyTorch's FBGEMM kernels (x86 builds); use memory plan fp32 here")
    import os
    from concurrent.futures import ThreadPoolExecutor
    reduce_range = not has_vnni()
    targets = [(parent, attr, sub) for name, parent in module.named_modules()
               for attr, sub in parent.named_children()
               if isinstance(sub, nn.Linear) and include(f"{name}.{attr}" if name else attr)]
    # quantising and packing 500M weights takes seconds on one core: one layer per core at a time
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        swapped = list(pool.map(lambda t: DynamicInt8Linear.from_linear(t[2], reduce_range), targets))
    for (parent, attr, _), new in zip(targets, swapped):
        setattr(parent, attr, new)
    return len(targets)


def flow_int8_targets(name: str) -> bool:
    """The CFM estimator's transformer projections (attention and feed-forward): most of the flow's matmul work."""
    return name.startswith("decoder.estimator.") and (".attn1." in name or ".ff." in name)


def quantize_cpu_int8_(t3: nn.Module, s3gen: nn.Module) -> int:
    """The CPU plans' transform: T3's backbone projections and the estimator's transformer projections in dynamic
    int8; -> how many layers were swapped."""
    from .int8 import t3_int8_targets
    return quantize_dynamic_int8_(t3, t3_int8_targets) + quantize_dynamic_int8_(s3gen.flow, flow_int8_targets)
