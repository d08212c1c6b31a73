"""Cadence's cache directory, and the compilers' caches kept in it.

$CADENCE_CACHE, else $XDG_CACHE_HOME/cadence, else ~/.cache/cadence. It holds the CPU plans' int8 weights
(`memory.cpu_int8_cache`) and, for the `cadence` command, the compiled GPU kernels: Triton's (the engine's own
kernels, compiled on their first launch: seconds on a machine that has none yet) and torch.compile's
(`--compile`: about a minute cold). Their own defaults (~/.triton/cache, /tmp/torchinductor_$USER) sit outside
~/.cache, so a container that keeps its model cache on a volume (~/.cache/huggingface) recompiled every kernel on
each new start; kept here they persist wherever Cadence's cache does. A location the user set
(TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR) is left alone. Imports nothing heavy: the command sets them first."""

from __future__ import annotations

import os
from pathlib import Path

COMPILER_CACHES = {"TRITON_CACHE_DIR": "triton", "TORCHINDUCTOR_CACHE_DIR": "inductor"}


def cache_dir(env=os.environ) -> Path:
    """The cache directory (not created here)."""
    root = env.get("CADENCE_CACHE")
    if root:
        return Path(root).expanduser()
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cadence"


def keep_compiled_kernels(env=os.environ) -> dict[str, str]:
    """Point the compilers' caches that the user has not set into the cache directory (before torch or Triton
    is imported: they read these once). -> the variables set."""
    chosen = {}
    for var, sub in COMPILER_CACHES.items():
        if not env.get(var):
            env[var] = chosen[var] = str(cache_dir(env) / sub)
    return chosen
