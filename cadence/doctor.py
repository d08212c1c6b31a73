"""`cadence doctor`: what this machine has and which memory plan Cadence would pick, and why."""

from __future__ import annotations

import platform

import torch

from .memory.plan import ALL_PLANS, choose_cpu_plan, choose_plan


def _components() -> list[str]:
    """Versions and availability of what Cadence uses besides torch, and where voices are kept."""
    import os

    from . import __version__
    from .voices.library import default_root
    try:
        import av
        pyav = f"PyAV {av.__version__} (mp3, opus, aac, flac, m4a)"
    except ImportError:
        pyav = "PyAV missing: only wav/pcm output and wav/flac/ogg/mp3 input"
    from .watermark import perth_weights
    try:
        perth = f"Perth watermark: weights at {perth_weights()}"
    except ImportError as exc:
        perth = f"Perth watermark missing ({exc}): output is not watermarked (pip install --no-deps resemble-perth==1.0.1)"
    return [f"cadence {__version__}", f"CPU: {os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads",
            pyav, perth, f"voice library: {default_root()} (CADENCE_VOICES or --library to change)"]


def _cpu_plan_lines() -> list[str]:
    from .memory import cpu_int8
    flags = cpu_int8.cpu_flags()
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "neon",
                        "asimd") if f in flags]
    plan, why = choose_cpu_plan("auto")
    return [f"CPU features: {', '.join(simd) or 'none of note reported'}; PyTorch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; FBGEMM int8 kernels: "
            f"{'yes' if cpu_int8.available() else 'no'}",
            f"plan on the CPU: {plan.name} ({plan.note}); why: {why}"]


def report(vram_budget: str | None = None, measure: bool = False, device: str = "auto",
           cpu_threads: int | None = None, family: str = "english") -> list[str]:
    """What this machine has and what Cadence would do on it; `measure`: also the self-test's expected RTF of
    the `family` model (english, turbo, multilingual) on `device` with the plan auto picks there
    (`cadence.bench.selftest`)."""
    lines = [f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}", *_components()]
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
        lines.append("device: no CUDA device; Cadence runs on the CPU")
    lines += _cpu_plan_lines()
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        lines.append("MPS: available; Cadence would run fp32 weights on it (written for, not tested on MPS)")
    else:
        lines.append("MPS: not available on this machine (on Apple silicon Cadence would use fp32 on MPS; untested)")
    lines.append("memory plans:")
    lines += [f"  {p.name}: {p.note}" for p in ALL_PLANS.values()]
    if measure:
        from .bench.selftest import describe
        from .bench.selftest import measure as self_test
        from .config import EngineConfig
        from .family import family_named
        from .tts import pick_device
        model = family_named(family)  # ValueError naming the families, before any work
        config = EngineConfig(device=device, cpu_threads=cpu_threads)
        config.apply_cpu_threads()
        dev = pick_device(device)
        plan, _ = config.resolve_plan(dev)
        lines += describe(self_test(plan, dev, family=model))
    return lines
