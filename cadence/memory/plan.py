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


def choose_plan(name: str, budget: str | None, device: torch.device) -> tuple[MemoryPlan, str]:
    """-> (plan, why). `name` is a plan name or 'auto'; `budget` like '1.5GB', 'auto' (free VRAM) or None."""
    if device.type != "cuda":
        plan = PLANS["fp32"] if name in ("auto", "fp32") else PLANS.get(name)
        if plan is None:
            raise ValueError(f"unknown memory plan {name!r}; choose from auto, {', '.join(PLANS)}")
        return replace(plan, compile=False, offload=False), f"{device.type}: no CUDA device, plans only set precision"
    if name != "auto":
        if name not in PLANS:
            raise ValueError(f"unknown memory plan {name!r}; choose from auto, {', '.join(PLANS)}")
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
