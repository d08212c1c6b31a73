"""Carry Perth to a machine under a transfer limit: its package without the 37 MB weight file, plus the shapes and
statistics of every weight, from which `restore` writes a checkpoint of random weights in the shipped layout.

Perth's watermark costs the same with any weights of those shapes (no step of `apply_watermark` depends on their
values), so the serve benchmarks measure its real cost; the marks it makes are not Perth's. Use the real file
wherever the watermark itself matters.

    python scripts/perth_slim.py pack .whl_wm          # here: perth_slim.tar.gz + perth_weights.json
    python scripts/perth_slim.py restore /tmp/site .whl_wm   # there, after the wheels are installed
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

WEIGHTS = "perth/perth_net/pretrained/implicit/perth_net_250000.pth.tar"


def pack(out: Path) -> None:
    import perth
    import torch
    root = Path(perth.__file__).parent.parent
    out.mkdir(parents=True, exist_ok=True)
    state = torch.load(root / WEIGHTS, map_location="cpu", weights_only=False)
    manifest = {"step": state["step"], "tensors": {
        k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch."),
            "mean": float(v.float().mean()) if v.is_floating_point() else 0.0,
            "std": float(v.float().std()) if v.is_floating_point() and v.numel() > 1 else 0.0}
        for k, v in state["model"].items()}}
    (out / "perth_weights.json").write_text(json.dumps(manifest))
    with tarfile.open(out / "perth_slim.tar.gz", "w:gz") as tar:
        for path in sorted((root / "perth").rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel != WEIGHTS and "__pycache__" not in rel:
                tar.add(path, arcname=rel)


def restore(site: Path, src: Path) -> None:
    import torch
    with tarfile.open(src / "perth_slim.tar.gz") as tar:
        tar.extractall(site, filter="data")
    manifest = json.loads((src / "perth_weights.json").read_text())
    g = torch.Generator().manual_seed(0)
    model = {}
    for k, t in manifest["tensors"].items():
        dtype = getattr(torch, t["dtype"])
        if dtype.is_floating_point:
            model[k] = (torch.randn(t["shape"], generator=g) * t["std"] + t["mean"]).to(dtype)
        else:
            model[k] = torch.zeros(t["shape"], dtype=dtype)
    torch.save({"model": model, "step": manifest["step"]}, site / WEIGHTS)


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    pack(Path(rest[0])) if cmd == "pack" else restore(Path(rest[0]), Path(rest[1]))
