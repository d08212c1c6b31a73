"""On-disk format of one voice: a safetensors file of its tensors with JSON metadata in the header, written
atomically (temp file, fsync, rename) and read without unpickling anything."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .voice import Voice

FORMAT = "cadence-voice/1"
TENSORS = ("speaker_emb", "t3_prompt_tokens", "prompt_tokens", "prompt_feat", "xvector")


class VoiceFileError(ValueError):
    """A voice file is missing, truncated, corrupt or of another format. Its message names the file, never the
    directory it is in (a server's messages must not reveal its paths)."""


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def readable_by_all(path: Path) -> None:
    """Give `path` the mode a plain `open` would (0666 less the umask): safetensors' writer and mkstemp make
    files 0600, which hides them from a server running as another user."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path: Path, write) -> None:
    """`write(tmp_path)` then fsync and rename over `path`: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=str(path.parent))
    os.close(fd)
    try:
        write(Path(tmp))
        readable_by_all(Path(tmp))  # after the write: the writer may have made the file anew, 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_voice(path: Path, voice: Voice, extra_tensors: dict | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in voice.tensors().items()}
    tensors.update(extra_tensors or {})
    meta = dict(voice.meta, exaggeration=voice.exaggeration)
    header = {"format": FORMAT, "meta": json.dumps(meta, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def read_meta(path: Path) -> dict:
    """A voice file's metadata from its header alone (no tensor data read); VoiceFileError if unreadable."""
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        if header.get("format") != FORMAT:
            raise VoiceFileError(f"{path.name}: not a Cadence voice file (format {header.get('format')!r})")
        return json.loads(header["meta"])
    except VoiceFileError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise VoiceFileError(f"{path.name}: corrupt or truncated voice file ({type(exc).__name__}: {exc})") from exc


def load_voice(path: Path, with_extra: bool = False):
    """-> Voice (and the extra tensors if asked). Raises VoiceFileError naming the file on any damage."""
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT:
                raise VoiceFileError(f"{path.name}: not a Cadence voice file (format {header.get('format')!r})")
            meta = json.loads(header["meta"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except VoiceFileError:
        raise
    except FileNotFoundError as exc:
        raise VoiceFileError(f"{path.name}: voice file not found") from exc
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types on truncation/corruption
        raise VoiceFileError(f"{path.name}: corrupt or truncated voice file ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in TENSORS if k not in tensors]
    if missing:
        raise VoiceFileError(f"{path.name}: voice file lacks {', '.join(missing)}")
    _check_shapes(path, tensors)
    exaggeration = float(meta.pop("exaggeration", 0.5))
    voice = Voice(**{k: tensors[k] for k in TENSORS}, exaggeration=exaggeration, meta=meta)
    if with_extra:
        return voice, {k: v for k, v in tensors.items() if k not in TENSORS}
    return voice


def _check_shapes(path, t) -> None:
    ok = (t["speaker_emb"].dim() == 2 and t["t3_prompt_tokens"].dim() == 2 and t["prompt_tokens"].dim() == 2
          and t["prompt_feat"].dim() == 3 and t["xvector"].dim() == 2
          and t["prompt_feat"].shape[1] >= t["prompt_tokens"].shape[1] * 2 - 1)
    if not ok or not all(torch.isfinite(t[k].float()).all() for k in ("speaker_emb", "prompt_feat", "xvector")):
        raise VoiceFileError(f"{path.name}: voice tensors have unexpected shapes or non-finite values")

