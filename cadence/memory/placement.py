"""Where each network lives and in what precision: module transforms applied once, at load. Model code never
branches on precision or device."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def fold_weight_norm(module: nn.Module) -> None:
    """Replace weight-norm parametrisations by their product: same numbers, no per-call cost."""
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


def place(module: nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """Move (and cast floating tensors of) `module` tensor by tensor, so a device copy never holds two full
    precisions of the module at once."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                t = p.detach().to(device, non_blocking=True)
                if dtype is not None and t.is_floating_point():
                    t = t.to(dtype)
                sub._parameters[name] = nn.Parameter(t, requires_grad=False)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                t = b.to(device, non_blocking=True)
                keep_fp32 = name in ("_mel_filters", "window", "stft_window", "trim_fade", "inv_freq")
                if dtype is not None and t.is_floating_point() and not keep_fp32:
                    t = t.to(dtype)
                sub._buffers[name] = t
    return module.eval()


def apply_placement(t3, s3gen, ve, device: torch.device, model_dtype: torch.dtype, vocoder_dtype: torch.dtype,
                    prepare_device: torch.device, flow_dtype: torch.dtype | None = None) -> None:
    """The one place precision and placement meet: T3 and the flow model in `model_dtype`, the vocoder in
    `vocoder_dtype`, the preparation encoders in fp32 on `prepare_device`."""
    fold_weight_norm(s3gen)
    place(t3, device, model_dtype)
    place(s3gen.flow, device, flow_dtype or model_dtype)
    place(s3gen.mel2wav, device, vocoder_dtype)
    # The F0 predictor and harmonic source integrate phase over ~10^6 samples: always fp32.
    place(s3gen.mel2wav.f0_predictor, device, torch.float32)
    place(s3gen.mel2wav.m_source, device, torch.float32)
    s3gen.register_buffer("trim_fade", s3gen.trim_fade.to(device), persistent=False)
    place(s3gen.tokenizer, prepare_device, torch.float32)
    place(s3gen.speaker_encoder, prepare_device, torch.float32)
    place(ve, prepare_device, torch.float32)


def compile_regions(t3, s3gen) -> None:
    """Fuse the elementwise and norm work of each repeated block with torch.compile (Inductor), block by block:
    one compile per block kind, shared by all its instances and, with dynamic shapes, by every batch size and
    length: T3's decoder layers and the CFM estimator's transformer and ResNet blocks. Measured on an H100
    (one-piece batch of 16): flow 1139 -> 935 ms (bf16: 1% relative difference, Inductor keeps fp32 between
    fused ops where eager rounds each to bf16). The vocoder is not compiled: its Snake activations, most of
    what compiling its ResBlocks gained (347 -> 191 ms), are one Triton kernel already (`layers.snake`), while
    each of their call forms (a padded batch, a lone request) costs a ~20 s compile: with them compiled, a
    server once stalled 17 s mid-serving (one-piece requests, 8 clients)."""
    from ..models.s3gen.estimator import CausalBlock, CausalResnetBlock, TransformerBlock
    # A decoder layer has a variant per call kind (prompt prefill, one-request decode, batched decode with a mask
    # or with the per-row kernel, and the 0/1 sizes of each): more than dynamo's default of 8 per function.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for layer in t3.tfmr.layers:
        layer.forward = torch.compile(layer.forward, dynamic=True, fullgraph=True)
    for m in s3gen.modules():
        if isinstance(m, (TransformerBlock, CausalResnetBlock, CausalBlock)):
            m.forward = torch.compile(m.forward, dynamic=True)
