"""Ray Serve's overhead against the plain server, measured side by side: both servers up on the same machine and
GPU at once (the one not being driven sits idle), the same levels run against each in turn, round after round, the
order flipped every round so that neither side always goes first. Run-to-run spread of a level (the waves in which
equal requests move through T3 and S3Gen) is as large as the overhead being measured, so one run of each side after
the other cannot resolve it; interleaved rounds and medians over them can."""

from __future__ import annotations

import statistics
from typing import Callable


def interleaved_rounds(plain_base: str, serve_base: str, levels: list[int], modes, rounds: int,
                       run_levels: Callable[[str, list[int], tuple], list[dict]]) -> list[dict]:
    """`rounds` rounds; in each, every (mode, level) against both servers back to back, the plain one first in even
    rounds and Serve first in odd ones. `run_levels(base, [level], (mode,))` runs one level against one server.
    Returns one {"plain": [...], "serve": [...]} per round, levels in the order of `modes` × `levels`."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    out = []
    for r in range(rounds):
        got = {"plain": [], "serve": []}
        for stream in modes:
            for c in levels:
                order = (("plain", plain_base), ("serve", serve_base))
                for side, base in (order if r % 2 == 0 else order[::-1]):
                    got[side] += run_levels(base, [c], (stream,))
        out.append(got)
    return out


def summarize(rounds: list[dict]) -> list[dict]:
    """Per level: the median over rounds of each side's throughput and first audio p50, their ratio and
    difference, and every round's own ratio and difference (the spread the medians hide)."""
    summary = []
    for i, first in enumerate(rounds[0]["plain"]):
        plain = [r["plain"][i] for r in rounds]
        serve = [r["serve"][i] for r in rounds]
        med = {side: {"x_realtime": statistics.median(lv["x_realtime"] for lv in runs),
                      "ttfa_p50_s": statistics.median(lv["ttfa_p50_s"] for lv in runs),
                      "latency_p50_s": statistics.median(lv["latency_p50_s"] for lv in runs),
                      "errors": sum(lv["errors"] or 0 for lv in runs)}
               for side, runs in (("plain", plain), ("serve", serve))}
        summary.append({
            "concurrency": first["concurrency"], "stream": first.get("stream", True), "rounds": len(rounds),
            "plain": med["plain"], "serve": med["serve"],
            "throughput_ratio": med["serve"]["x_realtime"] / med["plain"]["x_realtime"]
            if med["plain"]["x_realtime"] else 0.0,
            "ttfa_delta_s": med["serve"]["ttfa_p50_s"] - med["plain"]["ttfa_p50_s"],
            "round_ratios": [s["x_realtime"] / p["x_realtime"] if p["x_realtime"] else 0.0
                             for p, s in zip(plain, serve)],
            "round_ttfa_deltas_s": [s["ttfa_p50_s"] - p["ttfa_p50_s"] for p, s in zip(plain, serve)]})
    return summary


def markdown(summary: list[dict], proxy: str = "serve") -> list[str]:
    """The report's lines for the side-by-side rounds."""
    if not summary:
        return []
    n = summary[0]["rounds"]
    lines = ["", f"Through Ray Serve (`cadence serve --ray --replicas 1 --ray-proxy {proxy}`, the same settings), "
             "both servers up at once "
             f"on the same machine, each level run against each in turn, {n} round{'s' if n > 1 else ''} (the order "
             "flipped every round); medians over the rounds, every round's own figure after them:", "",
             "| clients | mode | plain × real time | Serve × real time | Serve / plain | per round | TTFA p50 plain "
             "| Serve | Serve − plain | per round | errors plain / Serve |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for lv in summary:
        mode = "streamed" if lv["stream"] else "one piece"
        per_round = ", ".join(f"{100 * r:.0f}%" for r in lv["round_ratios"])
        per_ttfa = ", ".join(f"{1000 * d:+.0f}" for d in lv["round_ttfa_deltas_s"])
        p, s = lv["plain"], lv["serve"]
        lines.append(f"| {lv['concurrency']} | {mode} | {p['x_realtime']:.1f} | {s['x_realtime']:.1f} | "
                     f"**{100 * lv['throughput_ratio']:.1f}%** | {per_round} | {1000 * p['ttfa_p50_s']:.0f} ms | "
                     f"{1000 * s['ttfa_p50_s']:.0f} ms | **{1000 * lv['ttfa_delta_s']:+.0f} ms** | {per_ttfa} ms | "
                     f"{p['errors']} / {s['errors']} |")
    return lines
