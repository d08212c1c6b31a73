"""Cadence's Perth watermark (`cadence.models.perth`, `cadence.watermark`) against the `resemble-perth` package the
reference marks its outputs with: the same audio out, to float rounding, and a mark Perth's own detector reads."""

import warnings

import numpy as np
import pytest
import torch

from cadence import watermark as wm
from cadence.models.perth import PerthMark

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Perth's pkg_resources deprecation
    perth = pytest.importorskip("perth")


@pytest.fixture(scope="module")
def reference():
    if getattr(perth, "PerthImplicitWatermarker", None) is None:
        pytest.skip("perth.PerthImplicitWatermarker did not import")
    return perth.PerthImplicitWatermarker(device="cpu")


def _speechlike(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A tone switched on and off (loud and quiet frames: the mark goes on the loud ones only) over faint noise."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (t % 1.0 < 0.6) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("seconds, rate", [(0.25, 24000), (3.0, 24000), (2.0, 32000), (1.5, 16000)])
def test_the_mark_equals_perths_to_float_rounding(reference, seconds, rate):
    wav = _speechlike(seconds, rate)
    theirs = reference.apply_watermark(wav, sample_rate=rate)
    ours, marked = wm.apply(wav, rate, "cpu")
    assert marked and ours.shape == theirs.shape and ours.dtype == np.float32
    mark = np.linalg.norm(theirs - wav)
    assert mark > 0.01 * np.linalg.norm(wav)  # the mark is there to compare
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.linalg.norm(ours - theirs) <= 1e-5 * mark


def test_digital_silence_and_a_zero_bin_come_back_as_perths_floor(reference):
    """Zero bins (digital silence before a tone) go through Perth's clamps: the one branch a loud signal skips."""
    wav = _speechlike(1.0, 24000)
    wav[:6000] = 0.0
    theirs = reference.apply_watermark(wav, sample_rate=24000)
    ours, _ = wm.apply(wav, 24000, "cpu")
    assert np.abs(ours - theirs).max() <= 1e-5


def test_perths_detector_reads_cadences_mark(reference):
    wav = _speechlike(4.0, 24000, seed=3)
    ours, _ = wm.apply(wav, 24000, "cpu")
    found = reference.get_watermark(ours, sample_rate=24000)
    absent = reference.get_watermark(wav, sample_rate=24000)
    assert found.mean() > absent.mean() + 0.3, (found.mean(), absent.mean())


def test_perths_weights_load_by_name_and_shape(tmp_path):
    path = wm.perth_weights()
    marker = wm.load_perth(path)
    assert isinstance(marker, PerthMark)
    state = torch.load(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(marker.encoder.layers[1].conv.weight, state["model"]["encoder.layers.1.conv.weight"])
    bad = dict(state, model={k: v for k, v in state["model"].items() if k != "encoder.layers.6.conv.bias"})
    torch.save(bad, tmp_path / "bad.pth.tar")
    with pytest.raises(ValueError, match="encoder.layers.6.conv.bias"):
        wm.load_perth(tmp_path / "bad.pth.tar")


def test_audio_that_is_not_finite_is_refused_with_a_clear_error():
    wav = _speechlike(0.5, 24000)
    wav[100] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        wm.apply(wav, 24000, "cpu")


@pytest.mark.parametrize("samples", [1, 240, 480, 768])
def test_a_clip_too_short_for_perths_window_is_marked_and_keeps_its_length(reference, samples):
    """Perth raises unless a clip holds more than half its 2048-point window at 32 kHz (more than 768 samples at
    24 kHz): a stream's short last chunk would fail its request. Cadence marks it with silence after it and trims
    the silence off again."""
    wav = _speechlike(samples / 24000, 24000)
    with pytest.raises(RuntimeError):
        reference.apply_watermark(wav, sample_rate=24000)
    ours, marked = wm.apply(wav, 24000, "cpu")
    assert marked and ours.shape == wav.shape and np.isfinite(ours).all()


def test_the_shortest_clip_perth_takes_is_not_padded(reference):
    wav = _speechlike(769 / 24000, 24000)  # 1026 samples at 32 kHz: more than half of Perth's window, just
    theirs = reference.apply_watermark(wav, sample_rate=24000)
    ours, _ = wm.apply(wav, 24000, "cpu")
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-5
