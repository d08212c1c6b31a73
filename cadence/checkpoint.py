"""The official checkpoint layout: locate (local dir or hub), build uninitialised, load strictly with
mmap + assign, and make random-weight checkpoints in the exact layout for tests and benchmarks."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .family import ENGLISH, FAMILIES, ModelFamily, detect_family, family_named
from .models.no_init import uninitialised
from .models.s3gen import S3Gen, S3GenConfig
from .models.t3 import T3Config
from .models.t3_turbo import T3TurboConfig
from .models.voice_encoder import VoiceEncoder

HUB_REPO = ENGLISH.hub_repo
# Optional files of every family: the built-in voice, and the configs of GPT-2's tokenizer files.
OPTIONAL_FILES = ("conds.pt", "tokenizer.json", "added_tokens.json", "special_tokens_map.json",
                  "tokenizer_config.json")


def family_files(family: ModelFamily, path: Path | None = None) -> tuple[str, ...]:
    """The files a checkpoint of this family must hold (with `path`: the T3 file that directory holds)."""
    t3 = family.t3_name(path) if path is not None else family.t3_file
    return (family.ve_file, t3, family.s3gen_file, *family.tokenizer_files)


# Tensors the checkpoint stores apart that Cadence multiplies as one: packed name -> official parts, in order.
PACKED = {"self_attn.qkv_proj.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
          "mlp.gate_up_proj.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight")}


def _transposed(module: nn.Module) -> set[str]:
    """Weights stored (in, out) in the checkpoint (GPT-2's Conv1D layout) and used as Linear (out, in)."""
    from .models.t3_turbo import TransposedLinear
    return {f"{n}.weight" for n, m in module.named_modules() if isinstance(m, TransposedLinear)}


def _unused(module: nn.Module) -> dict[str, tuple]:
    """Tensors in the official file that inference never reads: checked by name and shape, not loaded."""
    return module.unused_checkpoint_shapes() if hasattr(module, "unused_checkpoint_shapes") else {}


def official_shapes(module: nn.Module) -> dict[str, tuple]:
    """The checkpoint's key -> shape for a module: packed tensors listed as their official parts, (in, out)
    tensors transposed, unused tensors included."""
    out = dict(_unused(module))
    transposed = _transposed(module)
    for name, t in module.state_dict(keep_vars=True).items():
        packed = next((p for p in PACKED if name.endswith(p)), None)
        if packed is None:
            out[name] = tuple(t.shape)[::-1] if name in transposed else tuple(t.shape)
            continue
        parts = PACKED[packed]
        prefix = name[: -len(packed)]
        rows = t.shape[0] // len(parts)
        for part in parts:
            out[prefix + part] = (rows, *t.shape[1:])
    return out


def pack_state(module: nn.Module, state: dict, skip: frozenset = frozenset()) -> dict:
    """The file's used tensors -> the module's parameters: (in, out) tensors transposed, packed parameters from
    the owning module's `pack(name, parts)` if it has one, else the parts concatenated along the output
    dimension. Parameters named in `skip` are left out."""
    out = dict(state)
    for name in _transposed(module) - skip:
        out[name] = out[name].t().contiguous()
    for name in module.state_dict(keep_vars=True):
        packed = next((p for p in PACKED if name.endswith(p)), None)
        if packed is not None and name not in skip:
            prefix = name[: -len(packed)]
            parts = [out.pop(prefix + part) for part in PACKED[packed]]
            owner = module.get_submodule((prefix + packed).rsplit(".", 2)[0])
            out[name] = owner.pack(packed, parts) if hasattr(owner, "pack") else torch.cat(parts, dim=0)
    return out


class CheckpointError(ValueError):
    """A checkpoint cannot be found or does not match the architecture."""


@dataclass(frozen=True)
class ModelConfig:
    t3: T3Config | T3TurboConfig
    s3gen: S3GenConfig
    family: ModelFamily = ENGLISH

    @classmethod
    def of(cls, family: ModelFamily, tiny: bool = False) -> "ModelConfig":
        return cls(family.t3_tiny_config if tiny else family.t3_config, family.s3gen(tiny), family)

    @classmethod
    def english(cls) -> "ModelConfig":
        return cls.of(ENGLISH)

    @classmethod
    def tiny(cls) -> "ModelConfig":
        return cls.of(ENGLISH, tiny=True)


def resolve(model: str | os.PathLike, family: str | None = None) -> Path:
    """A local directory in the official layout, or a hub repo id downloaded through huggingface_hub. `family`
    picks which of a repo's checkpoints to download where one repo holds several (`ResembleAI/chatterbox`
    holds the original and the multilingual model; unset: the original); a local directory says its own."""
    path = Path(model).expanduser()
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} is a file; a checkpoint is a directory in the official layout (or a hub id)")
    if path.is_dir():
        asked = family
        try:
            family = detect_family(path, prefer=asked)
        except ValueError as exc:
            raise CheckpointError(f"{path} is not a Chatterbox checkpoint: {exc}") from exc
        if asked is not None and asked != family.name:
            raise CheckpointError(f"{path} is a Chatterbox {family.name} checkpoint, not {asked}")
        missing = [f for f in family_files(family, path) if not (path / f).is_file()]
        if missing:
            raise CheckpointError(f"{path} is not a Chatterbox {family.name} checkpoint: missing {', '.join(missing)}")
        return path
    text = str(model)
    if text.startswith((".", "/", "~")) or text.count("/") != 1 or os.sep != "/" and os.sep in text:
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if family is not None:
        chosen = family_named(family)
        if chosen.hub_repo != text and text in {f.hub_repo for f in FAMILIES.values()}:
            raise CheckpointError(f"{text} holds no Chatterbox {family} checkpoint")
        family = chosen
    else:
        family = next((f for f in FAMILIES.values() if f.hub_repo == text), ENGLISH)
    import logging
    from huggingface_hub import hf_hub_download  # first: its import sets its loggers' levels
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings would reach the console twice; the error below says it all
    try:
        local = None
        token = os.environ.get("HF_TOKEN") or None  # gated repos (Turbo needed one at launch)
        for name in family_files(family):
            local = hf_hub_download(repo_id=str(model), filename=name, token=token)
        for name in (*OPTIONAL_FILES, *family.optional_files):
            try:
                hf_hub_download(repo_id=str(model), filename=name, token=token)
            except Exception:  # noqa: BLE001 - these files are optional
                pass
    except Exception as exc:  # noqa: BLE001 - network, auth and offline errors all end here
        raise CheckpointError(
            f"could not download {model!r} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
            "if this machine is offline, pass a local directory in the official layout") from exc
    finally:
        hub_log.setLevel(level)
    return Path(local).parent


def _check_keys(module: nn.Module, shapes: dict[str, tuple], file: str) -> None:
    """shapes: the file's key -> shape, checked against the module's official layout."""
    expected = official_shapes(module)
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {', '.join(extra[:3])})")
        raise CheckpointError(f"{file}: keys do not match the architecture: {'; '.join(parts)}")
    bad = [f"{k} {tuple(shapes[k])} != {v}" for k, v in expected.items() if tuple(shapes[k]) != v]
    if bad:
        raise CheckpointError(f"{file}: {len(bad)} tensors have the wrong shape, e.g. {bad[0]}")


def _skipped(module: nn.Module, skip_modules) -> tuple[frozenset, frozenset]:
    """The parameters of the submodules named in `skip_modules` (replaced after loading, e.g. by int8 layers
    built from a cache) and the checkpoint keys they are made of: neither is read."""
    params = frozenset(n for n in module.state_dict(keep_vars=True) if n.rsplit(".", 1)[0] in skip_modules)
    keys = set()
    for name in params:
        packed = next((p for p in PACKED if name.endswith(p)), None)
        keys |= {name[: -len(packed)] + part for part in PACKED[packed]} if packed else {name}
    return params, frozenset(keys)


def _assign(module: nn.Module, state: dict, file: str, skip_modules) -> None:
    """Read `state` (the file's tensors by key, minus unused ones) into the module, leaving the skipped
    submodules' parameters on the meta device for their replacements (so one left in place fails loudly)."""
    params, keys = _skipped(module, skip_modules)
    missing, unexpected = module.load_state_dict(pack_state(module, {k: v for k, v in state.items() if k not in keys},
                                                            params), strict=False, assign=True)
    if unexpected or set(missing) - params:
        raise CheckpointError(f"{file}: could not place {sorted(set(missing) - params)[:3] or unexpected[:3]}")
    for name in params:
        owner, _, leaf = name.rpartition(".")
        sub = module.get_submodule(owner)
        setattr(sub, leaf, nn.Parameter(torch.empty_like(getattr(sub, leaf), device="meta"), requires_grad=False))


def load_weights(module: nn.Module, path: Path, skip_modules: frozenset = frozenset()) -> None:
    """Load one safetensors file into a module built by `build`: strict names and shapes, tensors
    read straight into place and assigned (no random init); tensors inference never uses are checked by
    name and shape but not read. A `.pt` file (the multilingual checkpoint's ve.pt and s3gen.pt) is read as
    a pickled state dict with `weights_only=True` (tensors and plain containers only, never code), mmapped."""
    if path.suffix == ".pt":
        return _load_pickled(module, path, skip_modules)
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            _check_keys(module, shapes, path.name)
            unused = set(_unused(module)) | _skipped(module, skip_modules)[1]
            state = {k: f.get_tensor(k) for k in shapes if k not in unused}
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path.name}: not a readable safetensors file ({exc})") from exc
    _assign(module, state, path.name, skip_modules)


def _load_pickled(module: nn.Module, path: Path, skip_modules: frozenset = frozenset()) -> None:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file, or one holding more than tensors
        raise CheckpointError(f"{path.name}: not a readable state dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name}: not a state dict of tensors")
    _check_keys(module, {k: tuple(v.shape) for k, v in state.items()}, path.name)
    unused = _unused(module)
    _assign(module, {k: v for k, v in state.items() if k not in unused}, path.name, skip_modules)


def build(cfg: ModelConfig) -> tuple[nn.Module, S3Gen, VoiceEncoder]:
    """The three networks, uninitialised: their parameters are CPU allocations no page of which is touched, replaced
    by the files' tensors on load. (Built on the meta device instead, the first meta `arange` or `normal_` imported
    torch._dynamo: 2.6 s of a cold load.)"""
    with uninitialised():
        t3, s3gen, ve = cfg.family.t3_class(cfg.t3), S3Gen(cfg.s3gen), VoiceEncoder()
    return t3, s3gen, ve


def _materialise_buffers(module: nn.Module, device) -> None:
    """Non-persistent buffers (rotary tables, fades, windows) are not in the files; recompute them."""
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.is_meta:
                sub._buffers[name] = _rebuild_buffer(sub, name).to(device)


def _rebuild_buffer(sub: nn.Module, name: str) -> torch.Tensor:
    from .models.s3gen import trim_fade
    from .models.t3 import llama3_inv_freq
    if name == "inv_freq":
        return llama3_inv_freq(sub.cfg)
    if name == "trim_fade":
        return trim_fade()
    if name == "stft_window":
        return torch.hann_window(sub.cfg.n_fft, periodic=True)
    raise CheckpointError(f"no rule to rebuild buffer {name!r} of {type(sub).__name__}")


def load_models(path: Path, cfg: ModelConfig | None = None, family: str | None = None, skip: dict | None = None):
    """Build the three networks (uninitialised) and load the official files into them (on the CPU, mmapped);
    `family`: which checkpoint of a directory that holds several. `skip` ({"t3"|"s3gen": submodule names}):
    submodules whose weights are checked but not read, left on meta for the caller to replace."""
    cfg = cfg or detect_config(path, family)
    skip = skip or {}
    t3, s3gen, ve = build(cfg)
    load_weights(ve, path / cfg.family.ve_file)
    load_weights(t3, path / cfg.family.t3_name(path), frozenset(skip.get("t3", ())))
    load_weights(s3gen, path / cfg.family.s3gen_file, frozenset(skip.get("s3gen", ())))
    for m in (t3, s3gen, ve):
        _materialise_buffers(m, "cpu")
    return t3, s3gen, ve, cfg


def detect_config(path: Path, family: str | None = None) -> ModelConfig:
    """The family from the files held (`family`: the one to take of several); the official files are full
    size, our tiny test checkpoints say so in their metadata."""
    from safetensors import safe_open
    try:
        family = detect_family(path, prefer=family)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    with safe_open(str(path / family.t3_name(path)), "pt") as f:
        meta = f.metadata() or {}
    return ModelConfig.of(family, tiny=meta.get("cadence_config") == "tiny")


def fingerprint(path: Path, family: str | None = None) -> str:
    """A cheap identity of a checkpoint's weights: each file's size, its safetensors header (as canonical JSON:
    the writer stores metadata in no fixed order, so the same weights written twice must still match) and the
    first and last MiB of its tensor data. Voices remember it, so a voice prepared by other weights is never
    silently used."""
    import json
    import struct
    h = hashlib.sha256()
    family = detect_family(path, prefer=family)
    for name in (family.ve_file, family.t3_name(path), family.s3gen_file):
        p = Path(path) / name
        size = p.stat().st_size
        h.update(f"{name}:{size}".encode())
        with open(p, "rb") as f:
            n = 0
            if p.suffix == ".safetensors":
                (n,) = struct.unpack("<Q", f.read(8))
                h.update(json.dumps(json.loads(f.read(n)), sort_keys=True).encode())
                n += 8
            h.update(f.read(1 << 20))  # a pickle (.pt): its first and last MiB, the record names and data
            f.seek(max(n, size - (1 << 20)))
            h.update(f.read(1 << 20))
    return h.hexdigest()
