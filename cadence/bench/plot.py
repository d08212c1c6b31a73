"""`cadence bench plot`: an SVG bar chart of `cadence bench --reference` results, Cadence beside the reference:
seconds of compute per second of audio (RTF) for the 30 s clip, and peak VRAM, one pair of bars per result file.
The README's chart is this command's output over the raw results it links to."""

from __future__ import annotations

import json
from pathlib import Path

W, ROW_H, LABEL_W, BAR_W = 640, 54, 170, 190
COLORS = {"cadence": "#2b6cb0", "reference": "#a0aec0"}


def load_pairs(paths: list[str]) -> list[dict]:
    """Each `cadence bench --reference` JSON as {label, rtf: {side: x}, peak_mb: {side: x}} (30 s clip medians)."""
    pairs = []
    for path in paths:
        try:
            res = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
        if "reference" not in res or "cadence" not in res:
            raise ValueError(f"{path}: not a `cadence bench --reference` result (it has no reference side)")
        label = {"turbo": "Turbo"}.get(res.get("family", "english"), "original")
        pairs.append({"label": f"{label}, {res.get('device', 'GPU')}",
                      "rtf": {s: res[s]["long"]["rtf"]["median"] for s in ("cadence", "reference")},
                      "peak_mb": {s: res[s]["long"]["peak_allocated_mb"] for s in ("cadence", "reference")}})
    return pairs


def svg_bars(pairs: list[dict]) -> str:
    """Two panels (RTF, peak VRAM), each a pair of horizontal bars per result; shorter is better in both."""
    panels = [("rtf", "30 s clip: seconds per second of audio (lower is faster)", "{:.3f}"),
              ("peak_mb", "30 s clip: peak VRAM, MB (lower is leaner)", "{:.0f}")]
    h = 30 + len(panels) * (26 + len(pairs) * ROW_H)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" '
           'font-size="12">', f'<rect width="{W}" height="{h}" fill="white"/>',
           f'<rect x="{LABEL_W}" y="8" width="12" height="12" fill="{COLORS["cadence"]}"/>'
           f'<text x="{LABEL_W + 16}" y="18">Cadence</text>'
           f'<rect x="{LABEL_W + 90}" y="8" width="12" height="12" fill="{COLORS["reference"]}"/>'
           f'<text x="{LABEL_W + 106}" y="18">chatterbox-tts 0.1.7</text>']
    y = 30
    for key, title, fmt in panels:
        out.append(f'<text x="8" y="{y + 16}" font-weight="bold">{title}</text>')
        y += 26
        top = max(max(p[key].values()) for p in pairs) or 1.0
        for p in pairs:
            out.append(f'<text x="8" y="{y + 22}">{p["label"]}</text>')
            for i, side in enumerate(("cadence", "reference")):
                value = p[key][side]
                width = max(1.0, BAR_W * 1.6 * value / top)
                by = y + 4 + i * 22
                out.append(f'<rect x="{LABEL_W}" y="{by}" width="{width:.1f}" height="18" fill="{COLORS[side]}"/>')
                out.append(f'<text x="{LABEL_W + width + 6:.1f}" y="{by + 13}">{fmt.format(value)}</text>')
            y += ROW_H
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_plot(paths: list[str], out: str) -> str:
    svg = svg_bars(load_pairs(paths))
    Path(out).write_text(svg)
    return out
