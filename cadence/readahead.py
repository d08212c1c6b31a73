"""Read-ahead of the files a GPU server's start reads, issued the moment `cadence serve` starts.

On a machine whose page cache does not hold them yet (a fresh machine, a new container), `cadence serve` reads
several GB from disk one file at a time, each when it first needs it: torch's and Triton's libraries while it
imports, the checkpoint while it loads, cuDNN's and cuBLAS's kernels at the first convolutions and matmuls
(the first requests). Each wait is a cold read of that moment. Here one background thread asks the kernel to read
them all ahead (`posix_fadvise(WILLNEED)`, in the order they are needed), so the disk works while the process
imports and loads. Where they are cached already (a restart) each hint returns at once.

A hint, never a requirement: a file that is missing or unreadable is skipped, nothing is read into this process,
and the total stays under half of the memory the kernel reports available (the page cache is reclaimable, but a
small machine's should not be flushed for it). This module imports nothing heavy (`early_start` runs it first)."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

# the libraries, by the package that ships them: what `import torch` maps, what the first CUDA graphs and the
# first convolutions load (cuDNN's engines, cuBLAS), what Triton runs to compile a kernel
TORCH_LIBS = ("lib/libtorch_cuda.so", "lib/libtorch_cpu.so", "lib/libc10_cuda.so", "lib/libtorch_python.so")
NVIDIA_LIB_DIRS = ("cudnn/lib", "cublas/lib", "cuda_runtime/lib", "nvjitlink/lib")
TRITON_FILES = ("_C/libtriton.so", "backends/nvidia/bin/ptxas")


def _package_dirs(name: str) -> list[Path]:
    """Where package `name` is installed, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def library_files() -> tuple[list[Path], list[Path]]:
    """(needed while importing, needed at the first GPU work): torch's libraries; then cuDNN's, cuBLAS's and the
    CUDA runtime's from the `nvidia-*` wheels, and Triton's compiler."""
    early = [d / rel for d in _package_dirs("torch") for rel in TORCH_LIBS]
    late = [lib for d in _package_dirs("nvidia") for sub in NVIDIA_LIB_DIRS
            for lib in sorted((d / sub).glob("lib*.so*"))]
    late += [d / rel for d in _package_dirs("triton") for rel in TRITON_FILES]
    return early, late


def hub_snapshot(repo_id: str, env=os.environ) -> Path | None:
    """The local snapshot of hub repo `repo_id` ("owner/name") in the Hugging Face cache, or None: the one
    `refs/main` names, else the newest."""
    hub = env.get("HF_HUB_CACHE") or os.path.join(env.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"),
                                                   "hub")
    repo = Path(hub) / ("models--" + repo_id.replace("/", "--"))
    try:
        ref = (repo / "refs" / "main").read_text().strip()
        if (repo / "snapshots" / ref).is_dir():
            return repo / "snapshots" / ref
    except OSError:
        pass
    try:
        snapshots = [p for p in (repo / "snapshots").iterdir() if p.is_dir()]
    except OSError:
        return None
    return max(snapshots, key=lambda p: p.stat().st_mtime) if snapshots else None


def checkpoint_files(model: str, env=os.environ) -> list[Path]:
    """The files of checkpoint `model` (a local directory, or a hub id through its cached snapshot), largest
    first: the weights the load reads longest."""
    path = Path(model).expanduser()
    folder = path if path.is_dir() else (hub_snapshot(model, env) if model.count("/") == 1 else None)
    if folder is None:
        return []
    files = [p for p in folder.iterdir() if p.is_file()]  # follows the hub cache's links to its blobs
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable from the kernel, in bytes, or None where it does not say."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def hint(paths: list[Path], budget: int | None = None) -> int:
    """Ask the kernel to read `paths` into its page cache, in order, until `budget` bytes; returns the bytes
    hinted. A file that cannot be opened is skipped."""
    advice = getattr(os, "POSIX_FADV_WILLNEED", None)
    if advice is None:  # not Linux: nothing to hint with
        return 0
    seen, total = set(), 0
    for path in paths:
        try:
            real = os.path.realpath(path)
            size = os.path.getsize(real)
            if real in seen or (budget is not None and total + size > budget):
                continue
            fd = os.open(real, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, advice)  # queues the reads and returns; the interpreter lock is released
            seen.add(real)
            total += size
        except OSError:
            pass
        finally:
            os.close(fd)
    return total


def start(model: str, env=os.environ) -> threading.Thread:
    """Hint, in a daemon thread, what a GPU server of checkpoint `model` reads: the libraries its imports map,
    the checkpoint, then the libraries of its first GPU work; at most half the available memory."""
    def run():
        early, late = library_files()
        available = available_bytes()
        hint([*early, *checkpoint_files(model, env), *late], None if available is None else available // 2)

    thread = threading.Thread(target=run, name="cadence-readahead", daemon=True)
    thread.start()
    return thread
