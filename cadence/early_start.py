"""`cadence serve`'s helper processes, started the moment the command starts.

Beside a GPU engine a server marks its audio in watermark worker processes and encodes it in encoder processes
(`engine.watermark_worker` and `audio.encode_worker` say why). Each imports torch and Perth, or PyAV: seconds, with a
dozen importing at once. Started by the app, after the command's own imports, they were still importing when the
checkpoint had loaded, and `ready` waited 2.1-2.9 s for them on every restart measured on an H100. Started here,
before the command imports torch and the web stack, their imports overlap the server's own.

This module imports nothing heavy (no torch): it runs first. It reads only the flags and `CADENCE_*` variables that
decide which helpers a server wants; `ServerSettings` still parses and validates the whole command line. The app
adopts the helpers (`watermark_pool.start_workers`, `take_encoders`) and closes any it did not adopt once its
engine is loaded (`close_unadopted`): a wrong guess costs helpers started in vain, never a wrong setting."""

from __future__ import annotations

import argparse
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .engine import watermark_pool
from .engine.cpu_priority import HELPER_NICE
from .pipe_worker import PipeWorker, close_all

ENCODER_MODULE = "cadence.audio.encode_worker"
_FALSE = ("0", "false", "no", "off")

_encoders: list[PipeWorker] = []
_lock = threading.Lock()


def default_encode_workers(cores: int | None = None) -> int:
    """A server's encoders when none are asked for: a quarter of the cores, at least 2 (one response's encoding
    never waits for another's), at most 4 (`ServerSettings.encode_workers` says why)."""
    return max(2, min(4, (cores or os.cpu_count() or 1) // 4))


def encoder_process(nice: int) -> PipeWorker:
    """One encoder worker process, `nice` below the engine."""
    return PipeWorker(ENCODER_MODULE, ["--nice", str(max(0, int(nice)))])


def gpu_likely(env=os.environ, driver: Path = Path("/proc/driver/nvidia/gpus")) -> bool:
    """Whether device `auto` will pick CUDA, told without importing torch: an NVIDIA driver that lists a GPU, and
    CUDA devices not hidden by CUDA_VISIBLE_DEVICES."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    try:
        return driver.is_dir() and any(driver.iterdir())
    except OSError:
        return False


@dataclass(frozen=True)
class HelperPlan:
    """The helper processes a server will want."""
    watermark_lanes: int
    lane_threads: int
    encoders: int
    nice: int


def plan(argv: list[str], env, gpu: bool) -> HelperPlan | None:
    """What `cadence ARGV` (with the environment `env`, on a machine where `auto` means CUDA when `gpu`) will
    want started, or None: not `serve`, a Ray deployment (its replicas start their own), help, an engine not on a
    GPU, or a command line this reading cannot follow (the full parser then reports it)."""
    if not argv or argv[0] != "serve":
        return None
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    p.add_argument("--device")
    p.add_argument("--no-watermark", dest="watermark", action="store_false", default=None)
    p.add_argument("--watermark-device")
    p.add_argument("--encode-workers")
    p.add_argument("--ray", action="store_true")
    p.add_argument("-h", "--help", action="store_true")
    try:
        args, _ = p.parse_known_args(argv[1:])
        encoders = int(args.encode_workers or env.get("CADENCE_ENCODE_WORKERS") or 0) or default_encode_workers()
    except (argparse.ArgumentError, ValueError, SystemExit):
        return None
    if args.ray or args.help or encoders < 0:
        return None
    device = (args.device or env.get("CADENCE_DEVICE") or "auto").strip().lower()
    if not (device.startswith("cuda") or (device == "auto" and gpu)):
        return None
    watermark = args.watermark if args.watermark is not None else \
        env.get("CADENCE_WATERMARK", "1").strip().lower() not in _FALSE
    on_cpu = (args.watermark_device or env.get("CADENCE_WATERMARK_DEVICE") or "cpu").strip().lower() == "cpu"
    lanes = watermark_pool.lane_count() if watermark and on_cpu else 0
    return HelperPlan(lanes, watermark_pool.lane_team(lanes) if lanes else 0, encoders, HELPER_NICE)


def start(argv: list[str]) -> HelperPlan | None:
    """Start the helpers `cadence ARGV` will want (see `plan`); returns at once."""
    wanted = plan(argv, os.environ, gpu_likely())
    if wanted is None:
        return None
    if wanted.watermark_lanes:
        watermark_pool.prestart(wanted.watermark_lanes, wanted.lane_threads, wanted.nice)
    with _lock:
        _encoders.extend(encoder_process(wanted.nice) for _ in range(wanted.encoders))
    return wanted


def take_encoders(count: int, nice: int) -> list[PipeWorker]:
    """Up to `count` encoders started here with `nice`, now the caller's."""
    with _lock:
        fits = [w for w in _encoders if w.args == ["--nice", str(max(0, int(nice)))]][:max(0, count)]
        for w in fits:
            _encoders.remove(w)
    return fits


def close_unadopted() -> None:
    """Close the helpers no engine took (a guess that did not hold, or a load that failed)."""
    with _lock:
        encoders = list(_encoders)
        _encoders.clear()
    close_all(encoders)
    watermark_pool.close_spares()
