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
        values = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        return cls.from_int8(values, scales, bias, reduce_range)

    @classmethod
    def from_int8(cls, values: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None,
                  reduce_range: bool) -> "DynamicInt8Linear":
        """values (N, K) int8, scales (N,) float64: W = values * scales[:, None]."""
        with warnings.catch_warnings():  # quantised tensor types are marked for removal; the kernels are not yet
            warnings.simplefilter("ignore")
            zero = torch.zeros(values.shape[0], dtype=torch.long)
            qweight = torch._make_per_channel_quantized_tensor(values.contiguous(), scales.double(), zero, 0)
            packed = torch.ops.quantized.linear_prepack(qweight, bias)
        return cls(packed, values.shape[1], values.shape[0], reduce_range)

    def to_int8(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> (values int8 (N, K), scales float64 (N,), bias or None): what `from_int8` takes back."""
        qweight, bias = torch.ops.quantized.linear_unpack(self.packed)
        return qweight.int_repr(), qweight.q_per_channel_scales().double(), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x.float(), self.packed, self.reduce_range).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 dynamic (FBGEMM)"


def linear_targets(module: nn.Module, include) -> list[tuple[str, nn.Module, str, nn.Linear]]:
    """(qualified name, parent, attribute, linear) of every nn.Linear in `module` whose name passes `include`."""
    return [(f"{name}.{attr}" if name else attr, parent, attr, sub) for name, parent in module.named_modules()
            for attr, sub in parent.named_children() if isinstance(sub, nn.Linear)
            and include(f"{name}.{attr}" if name else attr)]


def swap_in_parallel(targets: list, make) -> int:
    """setattr(parent, attr, make(target)) for each target, built on all cores: quantising and packing 500M weights
    takes seconds on one."""
    import os
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        built = list(pool.map(make, targets))
    for (_, parent, attr, _), new in zip(targets, built):
        setattr(parent, attr, new)
    return len(targets)


def quantize_dynamic_int8_(module: nn.Module, include=lambda name: True) -> int:
    """Swap every nn.Linear of `module` whose qualified name passes `include` for a DynamicInt8Linear; -> how many.
    The module must be on the CPU."""
    if not available():
        raise ValueError("dynamic int8 needs PyTorch's FBGEMM kernels (x86 builds); use memory plan fp32 here")
    reduce_range = not has_vnni()
    return swap_in_parallel(linear_targets(module, include),
                            lambda t: DynamicInt8Linear.from_linear(t[3], reduce_range))


def flow_int8_targets(name: str) -> bool:
    """The CFM estimator's transformer projections (attention and feed-forward): most of the flow's matmul work."""
    return name.startswith("decoder.estimator.") and (".attn1." in name or ".ff." in name)


def t3_cpu_int8_targets(name: str) -> bool:
    """T3's backbone projections and its speech head: at one or two rows per step the head's 8,194 x 1,024 fp32
    matrix is a read of 34 MB (5.6 ms on two cores, 1.1 ms in int8), a seventh of the step."""
    from .int8 import t3_int8_targets
    return t3_int8_targets(name) or name == "speech_head"


def quantize_cpu_int8_(t3: nn.Module, s3gen: nn.Module, fingerprint: str | None = None) -> int:
    """The CPU plans' transform: T3's backbone projections and speech head and the estimator's transformer
    projections in dynamic int8 (those not already swapped in from the cache by
    `cpu_int8_cache.load_models_cached`); -> how many layers it quantised. With the checkpoint's `fingerprint`, what
    it quantised is written to the user's cache for the next load."""
    from . import cpu_int8_cache
    n = quantize_dynamic_int8_(t3, t3_cpu_int8_targets) + quantize_dynamic_int8_(s3gen.flow, flow_int8_targets)
    if n and fingerprint is not None:
        cpu_int8_cache.save({"t3": t3, "flow": s3gen.flow}, fingerprint)
    return n


def use_blocked_attention_(module: nn.Module, matmul_dtype: torch.dtype | None = None) -> int:
    """The CFM estimator's attention (every estimator `Attention` in `module`) computed a block of heads at a time
    (`layers.blocked_attention`) with its matmuls in `matmul_dtype` (None: the attention's input dtype); -> how many
    attention modules it set."""
    from ..layers.blocked_attention import blocked_attention
    from ..models.s3gen.estimator import Attention
    attend = functools.partial(blocked_attention, matmul_dtype=matmul_dtype)
    modules = [m for m in module.modules() if isinstance(m, Attention)]
    for m in modules:
        m.attend = attend
    return len(modules)


def place_transformer_stacks_(module: nn.Module, dtype: torch.dtype) -> int:
    """The CFM estimator's transformer stacks (every `TransformerStack` in `module`) computed in `dtype`, whatever
    the convolutions around them use; -> how many stacks. With int8 projections, which take and give fp32, an fp32
    stack converts only at its two ends and around its attention's bf16 matmuls, where a bf16 one converts twice
    around each projection. No plan uses it: with the estimator's rows side by side fp32 stacks measured 1.5%
    slower than bf16 ones (docs/cpu.md; `scripts/cpu_flow_ab.py` measures both)."""
    from ..models.s3gen.estimator import TransformerStack
    stacks = [m for m in module.modules() if isinstance(m, TransformerStack)]
    for stack in stacks:
        stack.to(dtype)  # the norms; the int8 projections' packed weights are no parameters and stay as they are
    return len(stacks)


def apply_flow_transforms_(flow: nn.Module, plan) -> None:
    """The CPU plans' transforms of the flow (or an estimator) after its int8 projections are in: blocked
    attention and the estimator's rows side by side, as `plan` (a `MemoryPlan`) asks."""
    from .cpu_rows import estimator_rows_side_by_side_
    if plan.rows_side_by_side:
        estimator_rows_side_by_side_(flow, torch.get_num_threads())
    if plan.blocked_attention:
        use_blocked_attention_(flow, matmul_dtype=plan.flow_dtype)
