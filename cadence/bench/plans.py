"""`cadence bench --plans`: Cadence's memory plans side by side in one process (speed, device memory, load), with
each reduced-precision plan's error against fp32 and, with --reference, the stock package beside them."""

from __future__ import annotations

import torch

from .offline import LONG_TEXT, SHORT_TEXT, BenchOptions, Case, bench_cadence, cpu_name, reference_for, write_report


def run_plans(opt: BenchOptions, plans: list[str], out_json: str | None, out_md: str | None) -> dict:
    """The seed's "VRAM usage comparison" for Cadence's memory plans, next to the reference, one process."""
    import tempfile
    from dataclasses import replace

    import soundfile as sf

    from ..random_checkpoint import synthetic_voice
    from .fidelity import fidelity_of_plans
    from ..checkpoint import resolve
    from ..family import detect_family
    reference = reference_for(detect_family(resolve(opt.model))) if opt.reference else None  # refused before work
    wav, sr = synthetic_voice(seconds=9.98), 24000
    opt.cases = [Case("short", SHORT_TEXT, opt.short_tokens), Case("long", LONG_TEXT, opt.long_tokens)]
    result = {"device": torch.cuda.get_device_name() if torch.device(opt.device).type == "cuda" else cpu_name(),
              "torch": torch.__version__, "repeats": opt.repeats, "plans": {},
              "cases": [{"name": c.name, "tokens": c.tokens, "text": c.text} for c in opt.cases]}
    for name in plans:
        result["plans"][name] = bench_cadence(replace(opt, memory_plan=name, dtype="auto", vocoder_dtype="auto",
                                                      compile=None), wav, sr)
    if reference is not None:
        path = tempfile.mkdtemp() + "/voice.wav"
        sf.write(path, wav, sr, subtype="PCM_16")
        result["reference"] = reference(opt, path)
    result["fidelity"] = fidelity_of_plans(opt.model, opt.device, [p for p in plans if p != "fp32"])
    write_report(result, plans_markdown(result), out_json, out_md)
    return result


def plans_markdown(result: dict) -> str:
    long_s, short_s = (result["cases"][i]["tokens"] / 25 if "cases" in result else d for i, d in ((1, 30), (0, 3)))
    head = (f"| plan | peak allocated (MB) | peak reserved (MB) | process, NVML (MB) | {long_s:g} s RTF | "
            f"{short_s:g} s RTF | "
            "T3 tok/s | load (s) | T3 logit rel. err vs fp32 | mel SNR vs fp32 (dB) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    rows, flat = [], []
    entries = list(result["plans"].items()) + ([("reference", result["reference"])] if "reference" in result else [])
    for name, r in entries:
        fid = result.get("fidelity", {}).get(name, {})
        long, short = r["long"], r["short"]
        err = f"{fid['t3_logits_rel_err_max']:.1e}" if fid else ("0 (is fp32)" if name == "fp32" else "–")
        snr = f"{fid['mel_snr_db']:.1f}" if fid else ("∞" if name == "fp32" else "–")
        def mb(key):  # device memory: CUDA only
            return f"{long[key]:.0f}" if long.get(key) else "–"
        rows.append(f"| {name} | {mb('peak_allocated_mb')} | {mb('peak_reserved_mb')} | "
                    f"{mb('process_mb')} | {long['rtf']['median']:.4f} | {short['rtf']['median']:.4f} | "
                    f"{long['t3_tok_per_s']['median']:.0f} | {r['load_s']:.2f} | {err} | {snr} |")
        if "consecutive" in r:
            c = r["consecutive"]
            flat.append(f"| {name} | {c['n']} | {c['allocated_mb']['min']:.1f}–{c['allocated_mb']['max']:.1f} | "
                        f"{c['growth_allocated_mb']:+.1f} | {c['reserved_mb']['min']:.0f}–{c['reserved_mb']['max']:.0f} | "
                        f"{c['growth_reserved_mb']:+.0f} |")
    md = f"Device: {result['device']}; torch {result['torch']}; {result['repeats']} repeats, medians.\n\n" + head + "\n".join(rows) + "\n"
    if flat:
        md += ("\nDevice memory after each of N consecutive short generations:\n\n| plan | N | allocated (MB) | "
               "allocated, last − first | reserved (MB) | reserved, last − first |\n|---|---|---|---|---|---|\n"
               + "\n".join(flat) + "\n")
    return md
