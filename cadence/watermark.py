"""The Perth implicit watermark the reference applies to every output, through the network and weights the
`resemble-perth` package ships (optional extra `cadence[watermark]`)."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings

import numpy as np
import torch

log = logging.getLogger("cadence")
_lock = threading.Lock()
_state: dict = {}  # "error", "warned", and one loaded marker per device: ("marker", "cuda:0") -> marker


def _load(device: str = "cpu"):
    key = ("marker", device)
    with _lock:
        if key in _state or "error" in _state:
            return _state.get(key)
        try:
            # perth warns about pkg_resources and prints its step count on load; keep the console clean.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                import perth  # noqa: PLC0415 - optional dependency, imported on first use
                if getattr(perth, "PerthImplicitWatermarker", None) is None:
                    raise ImportError("perth.PerthImplicitWatermarker did not import (needs setuptools<81, librosa)")
                _state[key] = perth.PerthImplicitWatermarker(device=device)
        except Exception as exc:  # noqa: BLE001
            _state["error"] = f"{type(exc).__name__}: {exc}"
        return _state.get(key)


def preload(device: str = "cpu") -> bool:
    """Load Perth now, onto `device` (a few seconds of imports); True when it is available."""
    return _load(str(device)) is not None


def unavailable_reason() -> str:
    """Why Perth did not load ('' when it did, or was never asked for)."""
    return _state.get("error", "")


def _streams() -> dict:
    # One CUDA stream per watermarking thread and device: a lane's Perth kernels never queue behind the engine's
    # work on the default stream, nor behind another lane's.
    local = _state.setdefault("threads", threading.local())
    if not hasattr(local, "streams"):
        local.streams = {}
    return local.streams


def apply(wav: np.ndarray, sample_rate: int, device: str = "cpu") -> tuple[np.ndarray, bool]:
    """Watermark `wav` with Perth's network on `device`; returns (audio, watermarked). When Perth is not
    installed, warns once, clearly, and returns the audio unmarked."""
    device = str(device)
    marker = _load(device)
    if marker is None:
        if not _state.get("warned"):
            _state["warned"] = True
            log.warning("Perth watermark unavailable (%s); output is NOT watermarked. "
                        "Install it with: pip install 'cadence-tts[watermark]' && pip install --no-deps "
                        "resemble-perth==1.0.1 (Perth pins an old torch, so it goes in without its dependencies)",
                        _state.get("error"))
        return wav, False
    if not device.startswith("cuda"):
        with torch.inference_mode():
            return np.asarray(marker.apply_watermark(wav, sample_rate=sample_rate), dtype=np.float32), True
    streams = _streams()
    stream = streams.get(device) or streams.setdefault(device, torch.cuda.Stream(device=device))
    with torch.inference_mode(), torch.cuda.stream(stream):
        out = marker.apply_watermark(wav, sample_rate=sample_rate)  # ends in .cpu(): synchronises this stream only
    return np.asarray(out, dtype=np.float32), True
