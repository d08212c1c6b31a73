"""The CPU plans' int8 weights, kept between runs: quantising T3 from its fp32 file reads 2 GB and rounds 500M
weights, while the cache is a quarter of that and goes straight to packing. One file per checkpoint under the
user's cache directory ($CADENCE_CACHE, else $XDG_CACHE_HOME/cadence, else ~/.cache/cadence), named by the
checkpoint's fingerprint and checked against it on read; written once, atomically. A cache that cannot be read or
written is skipped (a warning), never an error: the weights are quantised from the checkpoint instead."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .cpu_int8 import DynamicInt8Linear, has_vnni, linear_targets, swap_in_parallel

FORMAT = "cadence-cpu-int8-v1"
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    root = os.environ.get("CADENCE_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cadence"


def cache_path(fingerprint: str) -> Path:
    return cache_dir() / f"cpu_int8-{fingerprint[:32]}.safetensors"


def save(parts: dict, fingerprint: str) -> Path | None:
    """Write the DynamicInt8Linear layers of `parts` ({prefix: (module, include)}); -> the file, or None."""
    state = {}
    for prefix, (module, _) in parts.items():
        for name, m in module.named_modules():
            if isinstance(m, DynamicInt8Linear):
                values, scales, bias = m.to_int8()
                state[f"{prefix}.{name}.values"], state[f"{prefix}.{name}.scales"] = values.contiguous(), scales
                if bias is not None:
                    state[f"{prefix}.{name}.bias"] = bias.contiguous()
    path = cache_path(fingerprint)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(tmp), metadata={"format": FORMAT, "checkpoint": fingerprint})
        os.replace(tmp, path)  # a reader sees the old file or the whole new one
        return path
    except OSError as exc:
        log.warning("could not write the int8 cache %s (%s); the next load quantises again", path, exc)
        tmp.unlink(missing_ok=True)
        return None


def load(parts: dict, fingerprint: str) -> bool:
    """Swap the targets of `parts` for DynamicInt8Linear layers built from the cached int8 weights; False (nothing
    changed) if there is no cache for this checkpoint or it does not hold every target."""
    path = cache_path(fingerprint)
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or meta.get("checkpoint") != fingerprint:
                return False
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
        log.warning("ignoring the unreadable int8 cache %s (%s)", path, exc)
        return False
    targets = {prefix: linear_targets(module, include) for prefix, (module, include) in parts.items()}
    keys = [f"{prefix}.{name}" for prefix, found in targets.items() for name, *_ in found]
    if not keys or any(f"{k}.values" not in state or f"{k}.scales" not in state for k in keys):
        return False
    reduce_range = not has_vnni()
    for prefix, found in targets.items():
        swap_in_parallel(found, lambda t, p=prefix: DynamicInt8Linear.from_int8(
            state[f"{p}.{t[0]}.values"], state[f"{p}.{t[0]}.scales"], state.get(f"{p}.{t[0]}.bias"), reduce_range))
    return True
