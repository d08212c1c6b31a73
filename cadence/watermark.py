"""The Perth implicit watermark the reference applies to every output: Cadence's own computation of it
(`cadence.models.perth`, Perth's to float rounding at a third of its CPU time) with the weights the `resemble-perth`
package ships, read from its install without importing it (optional extra `cadence[watermark]`)."""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from pathlib import Path

import numpy as np
import torch

from .audio.io import resample as soxr_hq
from .models.perth import HOP, N_FFT, SAMPLE_RATE as PERTH_RATE, PerthMark

log = logging.getLogger("cadence")
_lock = threading.Lock()
_state: dict = {}  # "error", "warned", and one loaded marker per device: ("marker", "cuda:0") -> marker
PERTH_WEIGHTS = ("perth_net", "pretrained", "implicit", "perth_net_250000.pth.tar")
"""Where `resemble-perth` 1.0.1 keeps its implicit watermarker's weights, inside its package directory."""


def perth_weights() -> Path:
    """The installed `resemble-perth` package's weight file; ImportError when the package or the file is missing."""
    spec = importlib.util.find_spec("perth")  # finds the package without running its imports (seconds)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ImportError("resemble-perth is not installed")
    path = Path(locations[0]).joinpath(*PERTH_WEIGHTS)
    if not path.is_file():
        raise ImportError(f"resemble-perth has no {'/'.join(PERTH_WEIGHTS)} (expected version 1.0.1)")
    return path


def load_perth(path: Path, device: str = "cpu") -> PerthMark:
    """Perth's encoder weights from its checkpoint file (keys `encoder.*` of its `model` dict, names and shapes
    checked) into a `PerthMark` on `device`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = {k: v for k, v in state.get("model", {}).items() if k.startswith("encoder.")}
    marker = PerthMark()
    expected = {k: tuple(v.shape) for k, v in marker.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in weights.items()}
    if found != expected:
        wrong = sorted(set(expected.items()) ^ set(found.items()))[:4]
        raise ValueError(f"{path.name} does not hold Perth's implicit encoder as expected: {wrong}")
    marker.load_state_dict(weights)
    return marker.to(device).eval()


def _load(device: str = "cpu"):
    key = ("marker", device)
    with _lock:
        if key in _state or "error" in _state:
            return _state.get(key)
        try:
            _state[key] = load_perth(perth_weights(), device)
        except Exception as exc:  # noqa: BLE001
            _state["error"] = f"{type(exc).__name__}: {exc}"
        return _state.get(key)


def resample(wav: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """`librosa.resample`'s default without librosa: soxr at its HQ setting (`audio.io.resample`), cut or
    zero-padded to librosa's length ceil(n * rate_out / rate_in). The resampling Perth does on each side of its
    network."""
    if rate_in == rate_out:
        return wav
    n = math.ceil(wav.shape[-1] * rate_out / rate_in)
    out = soxr_hq(wav, rate_in, rate_out)
    return out[:n] if out.shape[-1] >= n else np.pad(out, (0, n - out.shape[-1]))


def preload(device: str = "cpu") -> bool:
    """Load Perth's network now, onto `device` (its 37 MB weight file; no import of the Perth package); True
    when it is available."""
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
    wav = np.ascontiguousarray(wav, dtype=np.float32).reshape(-1)
    if not np.isfinite(wav).all():
        raise ValueError("audio to watermark is not finite everywhere")
    # Perth's STFT needs more than half a window at 32 kHz (32 ms; Perth itself raises on less, e.g. a stream's
    # short last chunk or a one-token clip at speed 4): such a clip is marked with silence after it, then trimmed.
    short = math.ceil(wav.size * PERTH_RATE / sample_rate) <= N_FFT // 2
    pad = math.ceil((N_FFT // 2 + HOP) * sample_rate / PERTH_RATE) if short else 0  # enough for whole hops past it
    up = torch.from_numpy(resample(np.pad(wav, (0, pad)) if short else wav, sample_rate, PERTH_RATE))
    if not device.startswith("cuda"):
        with torch.inference_mode():
            out = marker(up).numpy()
    else:
        streams = _streams()
        stream = streams.get(device) or streams.setdefault(device, torch.cuda.Stream(device=device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            out = marker(up.to(device, non_blocking=False)).cpu().numpy()  # .cpu() synchronises this stream only
    marked = resample(out, PERTH_RATE, sample_rate)
    return (marked[: wav.size] if short else marked), True
