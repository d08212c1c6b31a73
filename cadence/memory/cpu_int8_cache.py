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

from ..cache_dir import cache_dir
from .cpu_int8 import DynamicInt8Linear, has_vnni

FORMAT = "cadence-cpu-int8-v1"
log = logging.getLogger(__name__)


def cache_path(fingerprint: str) -> Path:
    return cache_dir() / f"cpu_int8-{fingerprint[:32]}.safetensors"


def save(parts: dict, fingerprint: str) -> Path | None:
    """Write the DynamicInt8Linear layers of `parts` ({prefix: module}); -> the file, or None."""
    state = {}
    for prefix, module in parts.items():
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


def _cached_names(fingerprint: str) -> dict[str, list[str]] | None:
    """{"t3": [...], "flow": [...]}: the layers the cache for this checkpoint holds, from its header alone; None
    if there is no usable cache."""
    path = cache_path(fingerprint)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or meta.get("checkpoint") != fingerprint:
                return None
            names: dict[str, list[str]] = {}
            for key in f.keys():
                if key.endswith(".values"):
                    prefix, name = key[: -len(".values")].split(".", 1)
                    names.setdefault(prefix, []).append(name)
            return names or None
    except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
        log.warning("ignoring the unreadable int8 cache %s (%s)", path, exc)
        return None


def _build_all(fingerprint: str, names: dict[str, list[str]]) -> dict[str, dict[str, DynamicInt8Linear]]:
    """The cached layers, unpacked and packed for FBGEMM on all cores: {prefix: {name: layer}}."""
    from concurrent.futures import ThreadPoolExecutor
    state = load_file(str(cache_path(fingerprint)))
    reduce_range = not has_vnni()
    keys = [(prefix, name) for prefix, found in names.items() for name in found]
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        layers = list(pool.map(lambda k: DynamicInt8Linear.from_int8(
            state[f"{k[0]}.{k[1]}.values"], state[f"{k[0]}.{k[1]}.scales"], state.get(f"{k[0]}.{k[1]}.bias"),
            reduce_range), keys))
    out: dict[str, dict[str, DynamicInt8Linear]] = {}
    for (prefix, name), layer in zip(keys, layers):
        out.setdefault(prefix, {})[name] = layer
    return out


def load_models_cached(path: Path, family: str | None, fingerprint: str):
    """`checkpoint.load_models` for a CPU int8 plan: with a cache for this checkpoint, the int8 layers are built
    from it on background threads while the rest loads, and T3's and the flow's fp32 projections are checked but
    never read; -> (t3, s3gen, ve, cfg), the cached layers swapped in (none without a cache)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..checkpoint import load_models
    names = _cached_names(fingerprint)
    if names is None:
        return load_models(path, family=family)
    with ThreadPoolExecutor(1) as background:
        built = background.submit(_build_all, fingerprint, names)
        t3, s3gen, ve, cfg = load_models(path, family=family, skip={
            "t3": names.get("t3", []), "s3gen": [f"flow.{n}" for n in names.get("flow", [])]})
        layers = built.result()
    for root, prefix in ((t3, "t3"), (s3gen.flow, "flow")):
        for name, layer in layers.get(prefix, {}).items():
            parent, _, attr = name.rpartition(".")
            setattr(root.get_submodule(parent), attr, layer)
    return t3, s3gen, ve, cfg
