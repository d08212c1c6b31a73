import numpy as np
import torch

from cadence.audio.dsp import kaldi_fbank, resample_sinc, slaney_mel_filters, trim_silence
from cadence.text.normalize import normalize_text


def test_normalize_text():
    assert normalize_text("") == "You need to add some text for me to talk."
    assert normalize_text("hello   world") == "Hello world."
    assert normalize_text("wait… what: this; that — “quoted”") == 'Wait,  what, this,  that - "quoted".'  # the reference keeps the double spaces
    assert normalize_text("Already done!") == "Already done!"


def test_mel_filters_shape_and_area():
    f = slaney_mel_filters(16000, 400, 128)
    assert f.shape == (128, 201) and f.dtype == np.float32 and (f >= 0).all()


def test_resample_sinc_keeps_a_tone():
    sr_in, sr_out = 24000, 16000
    t = torch.arange(sr_in) / sr_in
    y = resample_sinc(torch.sin(2 * torch.pi * 440 * t)[None], sr_in, sr_out)
    assert y.shape == (1, sr_out)
    ref = torch.sin(2 * torch.pi * 440 * torch.arange(sr_out) / sr_out)
    assert float((y[0, 100:-100] - ref[100:-100]).abs().max()) < 1e-2


def test_kaldi_fbank_shape():
    feats = kaldi_fbank(torch.randn(16000) * 0.1)
    assert feats.shape == (98, 80) and torch.isfinite(feats).all()


def test_trim_silence_cuts_edges():
    wav = np.concatenate([np.zeros(16000), 0.5 * np.sin(np.arange(16000) * 0.1), np.zeros(16000)]).astype(np.float32)
    out = trim_silence(wav)
    assert 16000 <= len(out) < 26000
