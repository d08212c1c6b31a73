"""`cadence doctor`: what this machine has and which memory plan Cadence would pick, and why."""

from __future__ import annotations

import platform

import torch

from .memory.plan import PLANS, choose_plan


def report(vram_budget: str | None = None) -> list[str]:
    lines = [f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}"]
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        props = torch.cuda.get_device_properties(dev)
        free, total = torch.cuda.mem_get_info(dev)
        lines.append(f"device: {props.name} (compute {props.major}.{props.minor}), CUDA {torch.version.cuda}")
        try:
            import pynvml
            pynvml.nvmlInit()
            lines.append(f"driver: {pynvml.nvmlSystemGetDriverVersion()}")
        except Exception:  # noqa: BLE001 - NVML is optional
            lines.append("driver: (NVML not available)")
        lines.append(f"VRAM: {free / 2**20:.0f} MB free of {total / 2**20:.0f} MB")
        for budget in ([vram_budget] if vram_budget else [None, "auto"]):
            try:
                plan, why = choose_plan("auto", budget, dev)
                peak = f"{plan.expected_peak_mb:.0f} MB" if plan.expected_peak_mb else "not measured"
                lines.append(f"plan for budget {budget or 'none'}: {plan.name} ({plan.note}); expected 30 s peak "
                             f"{peak}; why: {why}")
            except ValueError as exc:
                lines.append(f"plan for budget {budget}: none fits: {exc}")
    else:
        lines.append("device: no CUDA device; Cadence runs on the CPU in fp32 (plan fp32)")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        lines.append("MPS: available; Cadence would run fp32 weights on it (written for, not tested on MPS)")
    else:
        lines.append("MPS: not available on this machine (on Apple silicon Cadence would use fp32 on MPS; untested)")
    lines.append("plans: " + "; ".join(f"{p.name} = {p.note}" for p in PLANS.values()))
    return lines
