"""Weight-only int8: linear layers swapped for `Int8Linear` (int8 weight, one scale per output channel),
quantised at load from the official fp32 tensors. The matmul dequantises on the fly; under
`EngineConfig.compile` the dequantise-multiply is fused into one kernel."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from . import int8_triton


class Int8Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, dtype=torch.bfloat16, device=None, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=dtype, device=device))
        # GPT-2's projections (Turbo) carry a bias, kept in the compute dtype and added after the scaled matmul.
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype) -> "Int8Linear":
        w = linear.weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        m = cls(linear.in_features, linear.out_features, dtype, device=w.device, bias=linear.bias is not None)
        m.weight.copy_(q)
        m.scales.copy_(scales.to(dtype))
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach().to(dtype))
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and x.numel() // x.shape[-1] <= 16 and int8_triton.available(x.device):
            out = int8_triton.int8_mm(x, self.weight, self.scales)  # decode: fused, weight read as int8
        else:
            out = F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        return out if self.bias is None else out + self.bias.to(out.dtype)


def _swap_linears(module: nn.Module, include, make) -> int:
    """Replace every nn.Linear whose qualified name passes `include` by `make(linear)`."""
    count = 0
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(sub, nn.Linear) and include(full):
                setattr(child, attr, make(sub))
                count += 1
    return count


def quantize_int8_(module: nn.Module, dtype: torch.dtype, include=lambda name: True) -> int:
    """Quantise every nn.Linear whose qualified name passes `include`; returns how many."""
    return _swap_linears(module, include, lambda lin: Int8Linear.from_linear(lin, dtype))


def t3_int8_targets(name: str) -> bool:
    """The backbone layers' projections (Llama's, or GPT-2's for Turbo: 98% / 80% of T3's weights); heads and
    embeddings stay in bf16."""
    return name.startswith(("tfmr.layers.", "tfmr.h."))


QUANT_FILE = "t3_int8.cadence.safetensors"


def save_int8(module: nn.Module, path: str | Path, fingerprint: str) -> None:
    """Write the quantised T3 (int8 weights, scales, the rest) so the next load skips quantisation. The
    checkpoint's fingerprint goes with it: a file made from other weights is never used."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "cadence_quant": "int8-weight-only",
                                          "checkpoint": fingerprint})
    from ..voices.store import readable_by_all
    readable_by_all(Path(path))


def load_int8_into(module: nn.Module, path: str | Path, fingerprint: str, dtype: torch.dtype) -> bool:
    """Swap `module`'s targets for Int8Linear and load a saved quantised state; False (nothing changed) if the
    file is absent or was made from another checkpoint."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        return False
    with safe_open(str(path), "pt") as f:
        if (f.metadata() or {}).get("checkpoint") != fingerprint:
            return False
    state = load_file(str(path))
    _swap_linears(module, lambda name: f"{name}.scales" in state,
                  lambda lin: Int8Linear(lin.in_features, lin.out_features, dtype, device=lin.weight.device,
                                         bias=lin.bias is not None))
    module.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return True
