"""Parity fixtures: one full-size random checkpoint in the official layout, loaded by both the reference
package (chatterbox-tts==0.1.7) and Cadence. These tests must run in CI: a missing reference is a failure."""

import contextlib
import os

import pytest
import torch


@pytest.fixture(scope="session")
def full_ckpt(tmp_path_factory):
    from cadence.random_checkpoint import make_random_checkpoint
    keep = os.environ.get("CADENCE_PARITY_CKPT")
    if keep and os.path.isfile(os.path.join(keep, "s3gen.safetensors")):
        return keep
    return make_random_checkpoint(keep or tmp_path_factory.mktemp("full"), seed=0, tiny=False, with_conds=False)


@pytest.fixture(scope="session")
def device():
    dev = os.environ.get("CADENCE_PARITY_DEVICE", "cpu")
    if dev.startswith("cuda"):
        # fp32 parity means fp32 arithmetic: no TF32 in cuDNN convolutions or matmuls, for either side.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return dev


@pytest.fixture(scope="session")
def reference(full_ckpt, ref_wav_path, device):
    # torch 2.13 removed torch.backends.cuda.sdp_kernel, which the reference's perceiver enters as a
    # context manager around SDPA; it only selects kernels, so a no-op context keeps its numbers.
    if not hasattr(torch.backends.cuda, "sdp_kernel"):
        torch.backends.cuda.sdp_kernel = lambda **_: contextlib.nullcontext()
    from chatterbox.tts import ChatterboxTTS
    model = ChatterboxTTS.from_local(full_ckpt, device)
    model.prepare_conditionals(str(ref_wav_path), exaggeration=0.5)
    return model


@pytest.fixture(scope="session")
def ours(full_ckpt, device):
    from cadence.tts import TTS
    return TTS.from_dir(full_ckpt, device=device, watermark=False, memory_plan="fp32", enforce_eager=True)


@pytest.fixture(scope="session")
def our_voice(ours, ref_wav_path):
    return ours.prepare_voice(str(ref_wav_path), exaggeration=0.5)
