"""`MemoryPlan`: how the networks are stored and placed, chosen once at load by name or from a VRAM budget.
Every strategy is a module transform applied in `apply_plan`; model code never mentions them."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class MemoryPlan:
    name: str
    t3_dtype: torch.dtype = torch.bfloat16
    flow_dtype: torch.dtype = torch.bfloat16
    vocoder_dtype: torch.dtype = torch.float32
    t3_int8: bool = False
    """Weight-only int8 for T3's Llama layers (per-output-channel scales)."""
    cpu_int8: bool = False
    """Dynamic int8 (FBGEMM) for T3's backbone projections and the CFM estimator's transformer projections: the
    CPU plans (`cadence.memory.cpu_int8`)."""
    blocked_attention: bool = False
    """The CFM estimator's attention a block of heads at a time in plain batched matmuls
    (`cadence.layers.blocked_attention`), its matmuls in `flow_dtype`: on a CPU with native bf16, about twice the
    fused kernel's speed."""
    rows_side_by_side: bool = False
    """The CFM estimator's rows (the CFG pair, a batch's requests) each on its own CPU worker thread with a share
    of the cores, instead of op by op across all of them (`cadence.memory.cpu_rows`)."""
    offload: bool = False
    """Sequential offload: T3 and S3Gen live in pinned CPU memory; only the running stage is on the GPU."""
    compile: bool = False
    vocoder_window_s: float | None = None
    """Vocode long clips in windows of this many seconds (phase-continuous, cross-faded, as streaming does), so
    the vocoder's activations stop growing with the clip's length. None: one piece."""
    expected_peak_mb: float | None = None
    """Peak allocated VRAM (MiB) for a 30 s clip, measured on an H100 (docs/benchmarks.md); None if not measured."""
    note: str = ""


# Peaks: `cadence bench --memory-plan NAME`, one process per plan, NVIDIA H100, 30 s clip, peak allocated
# (docs/results/2026-11-26-h100/plans-streaming-server/plan_*_h100.json; docs/benchmarks.md, memory plans on an H100).
PLANS: dict[str, MemoryPlan] = {
    "fp32": MemoryPlan("fp32", torch.float32, torch.float32, torch.float32, expected_peak_mb=3518,
                       note="parity path, reference numerics"),
    "bf16": MemoryPlan("bf16", expected_peak_mb=2048, note="bf16 T3 and flow, fp32 vocoder (the default on CUDA)"),
    "bf16-lowmem": MemoryPlan("bf16-lowmem", vocoder_dtype=torch.bfloat16, expected_peak_mb=1978,
                              note="bf16 vocoder convolutions too (F0 and source stay fp32)"),
    "int8": MemoryPlan("int8", vocoder_dtype=torch.bfloat16, t3_int8=True, vocoder_window_s=8.0,
                       expected_peak_mb=1400,
                       note="int8 weight-only T3 layers, fused Triton dequant-matmul for decode; windowed vocoder"),
    "offload": MemoryPlan("offload", vocoder_dtype=torch.bfloat16, t3_int8=True, offload=True, vocoder_window_s=8.0,
                          expected_peak_mb=871,
                          note="only the running stage on the GPU, lent in pipelined transfers; T3 decode graphs "
                               "captured per lease; windowed vocoder"),
}
# CPU plans: fp32 stays the parity path; these trade a published error (docs/cpu.md) for speed on the CPU.
CPU_PLANS: dict[str, MemoryPlan] = {
    "cpu-int8": MemoryPlan("cpu-int8", torch.float32, torch.float32, torch.float32, cpu_int8=True,
                           rows_side_by_side=True,
                           note="CPU: dynamic int8 T3 and estimator projections (FBGEMM), fp32 elsewhere; the "
                                "estimator's rows side by side on the cores"),
    "cpu-bf16": MemoryPlan("cpu-bf16", torch.float32, torch.bfloat16, torch.bfloat16, cpu_int8=True,
                           blocked_attention=True, rows_side_by_side=True,
                           note="CPU with native bf16 (AMX, AVX512-BF16): cpu-int8 with the flow in bf16 around the "
                                "int8 projections, its attention in blocked bf16 matmuls, the vocoder's "
                                "convolutions in bf16; the estimator's rows side by side on the cores"),
}
BUDGET_ORDER = ("bf16", "bf16-lowmem", "int8", "offload")


def parse_size_mb(text: str) -> float:
    """'1.5GB', '800MB', '1200' (MB) -> megabytes (MiB)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(gb|gib|g|mb|mib|m)?\s*", str(text).lower())
    if not m:
        raise ValueError(f"cannot read a memory size from {text!r}; write e.g. 1.5GB or 800MB")
    value, unit = float(m.group(1)), m.group(2) or "mb"
    return value * 1024 if unit.startswith("g") else value


def free_vram_mb(device: torch.device) -> float:
    free, _ = torch.cuda.mem_get_info(device)
    return free / 2**20


ALL_PLANS = {**PLANS, **CPU_PLANS}


def native_bf16(flags: set[str]) -> bool:
    """Whether a CPU with these feature flags multiplies bf16 natively (AMX tiles or AVX512-BF16)."""
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def choose_cpu_plan(name: str, flags: set[str] | None = None, int8_kernels: bool | None = None
                    ) -> tuple[MemoryPlan, str]:
    """The plan for the CPU (or MPS, which takes the fp32 path): `name` or 'auto', chosen from the CPU's
    feature `flags` and whether PyTorch has the int8 kernels (both read from this machine when None)."""
    from . import cpu_int8
    flags = cpu_int8.cpu_flags() if flags is None else flags
    int8_kernels = cpu_int8.available() if int8_kernels is None else int8_kernels
    if name == "auto":
        if not int8_kernels:
            return PLANS["fp32"], "cpu: this PyTorch build has no FBGEMM int8 kernels, so fp32"
        if native_bf16(flags):
            return CPU_PLANS["cpu-bf16"], "cpu: int8 kernels and native bf16 (AMX or AVX512-BF16)"
        return CPU_PLANS["cpu-int8"], "cpu: int8 kernels, no native bf16, so fp32 outside the int8 layers"
    if name in CPU_PLANS and not int8_kernels:
        raise ValueError(f"memory plan {name!r} needs PyTorch's FBGEMM int8 kernels (x86 builds); use fp32")
    plan = ALL_PLANS.get(name)
    if plan is None:
        raise ValueError(f"unknown memory plan {name!r}; choose from auto, {', '.join(ALL_PLANS)}")
    # The CUDA plans keep their precision here; offload has nothing to offload to (int8 runs its reference path).
    return replace(plan, compile=False, offload=False), f"asked for plan {name!r}"


def choose_plan(name: str, budget: str | None, device: torch.device) -> tuple[MemoryPlan, str]:
    """-> (plan, why). `name` is a plan name or 'auto'; `budget` like '1.5GB', 'auto' (free VRAM) or None."""
    if device.type == "mps":  # Apple's GPU: the fp32 path (FBGEMM's int8 is x86-only); bf16/fp16 by name
        plan = PLANS["fp32"] if name == "auto" else ALL_PLANS.get(name)
        if plan is None or plan.cpu_int8:
            raise ValueError(f"memory plan {name!r} does not run on MPS; choose from auto, fp32, bf16")
        return replace(plan, compile=False, offload=False), "mps: fp32 unless a plan is named"
    if device.type != "cuda":
        return choose_cpu_plan(name)
    if name != "auto":
        if name in CPU_PLANS:
            raise ValueError(f"memory plan {name!r} is for the CPU; on CUDA choose from auto, {', '.join(PLANS)}")
        if name not in PLANS:
            raise ValueError(f"unknown memory plan {name!r}; choose from auto, {', '.join(ALL_PLANS)}")
        return PLANS[name], f"asked for plan {name!r}"
    if budget is None:
        return PLANS["bf16"], "default: fastest plan"
    limit = free_vram_mb(device) * 0.9 if budget == "auto" else parse_size_mb(budget)
    source = f"90% of free VRAM ({limit:.0f} MB)" if budget == "auto" else f"budget {limit:.0f} MB"
    for key in BUDGET_ORDER:
        plan = PLANS[key]
        if plan.expected_peak_mb is None or plan.expected_peak_mb <= limit:
            return plan, f"{source}: {key} is the fastest plan whose measured 30 s peak fits"
    smallest = PLANS[BUDGET_ORDER[-1]]
    raise ValueError(f"no memory plan fits {source}: the smallest, {smallest.name!r}, peaks at "
                     f"{smallest.expected_peak_mb:.0f} MB")
