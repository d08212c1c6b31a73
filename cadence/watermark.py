"""The Perth implicit watermark the reference applies to every output, through the network and weights the
`resemble-perth` package ships (optional extra `cadence[watermark]`)."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings

import numpy as np

log = logging.getLogger("cadence")
_lock = threading.Lock()
_state: dict = {}


def _load():
    with _lock:
        if "marker" in _state or "error" in _state:
            return _state.get("marker")
        try:
            # perth warns about pkg_resources and prints its step count on load; keep the console clean.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                import perth  # noqa: PLC0415 - optional dependency, imported on first use
                if getattr(perth, "PerthImplicitWatermarker", None) is None:
                    raise ImportError("perth.PerthImplicitWatermarker did not import (needs setuptools<81, librosa)")
                _state["marker"] = perth.PerthImplicitWatermarker()
        except Exception as exc:  # noqa: BLE001
            _state["error"] = f"{type(exc).__name__}: {exc}"
        return _state.get("marker")


def preload() -> bool:
    """Load Perth now (a few seconds of imports); True when it is available."""
    return _load() is not None


def apply(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, bool]:
    """Watermark `wav`; returns (audio, watermarked). When Perth is not installed, warns once, clearly,
    and returns the audio unmarked."""
    marker = _load()
    if marker is None:
        if not _state.get("warned"):
            _state["warned"] = True
            log.warning("Perth watermark unavailable (%s); output is NOT watermarked. "
                        "Install it with: pip install 'cadence-tts[watermark]' && pip install --no-deps "
                        "resemble-perth==1.0.1 (Perth pins an old torch, so it goes in without its dependencies)",
                        _state.get("error"))
        return wav, False
    return np.asarray(marker.apply_watermark(wav, sample_rate=sample_rate), dtype=np.float32), True
