"""`VoiceLibrary`: named, persistent voices in one directory, one `<name>.voice` file each (tensors, metadata and
the source audio as 16-bit PCM at 24 kHz). Writes are atomic and serialised across processes by a file lock;
a damaged file affects only its own voice.

A voice file holds one preparation per model family: its main tensors are the family named in its metadata
(`family`; files without one are the original model's), and a preparation for another family sits beside them
under `<family>/<tensor>` keys, listed in the metadata's `prepared` map with the checkpoint it was made with.
So one stored recording serves an English and a Turbo server from the same library, each preparing it once."""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import os
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .store import TENSORS, VoiceFileError, load_voice, read_meta, save_voice
from .voice import Voice

SUFFIX = ".voice"
MAX_NAME = 64
_FORBIDDEN = set('/\\\x00:*?"<>|')


class VoiceError(ValueError):
    """A refused name, a missing voice, or a voice that cannot be used with this checkpoint."""


class VoiceExists(VoiceError):
    """A voice of that name is already stored (and overwrite was not asked for)."""


MAX_SOURCE_SECONDS = 30.0  # source audio kept per voice: the models read its first 10 s (S3Gen) and 15 s (Turbo's T3)


def default_root() -> Path:
    env = os.environ.get("CADENCE_VOICES")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "cadence" / "voices"


def validate_name(name: str) -> str:
    """NFC-normalised, stripped; no path separators or control characters, not '.'-led, at most 64 chars."""
    if not isinstance(name, str):
        raise VoiceError(f"voice name must be a string, got {type(name).__name__}")
    n = unicodedata.normalize("NFC", name).strip()
    if not n:
        raise VoiceError("voice name is empty")
    if len(n) > MAX_NAME:
        raise VoiceError(f"voice name is longer than {MAX_NAME} characters")
    if n.startswith(".") or ".." in n:
        raise VoiceError(f"voice name {name!r} may not start with '.' or contain '..'")
    bad = sorted({c for c in n if c in _FORBIDDEN or unicodedata.category(c).startswith("C")})
    if bad:
        raise VoiceError(f"voice name {name!r} contains forbidden characters: {' '.join(repr(c) for c in bad)}")
    return n


@dataclass
class VoiceInfo:
    name: str
    duration_s: float
    exaggeration: float
    created: str
    bytes: int
    checkpoint: str
    source_sha256: str
    family: str = "english"
    families: tuple[str, ...] = ("english",)  # every family this file holds a preparation for
    language: str | None = None  # the language it speaks, where one was given


class VoiceLibrary:
    """Voices stored under `root` (default `$CADENCE_VOICES`, else `$XDG_DATA_HOME/cadence/voices`).

    `fingerprint` identifies the checkpoint in use and `family` its model family: a voice without a preparation
    by that checkpoint is prepared from its stored audio when `preparer` (wav, sample_rate, exaggeration) ->
    Voice is given (kept beside the other family's preparation), else refused."""

    def __init__(self, root: str | os.PathLike | None = None, fingerprint: str | None = None, preparer=None,
                 family: str = "english"):
        self.root = Path(root).expanduser() if root else default_root()
        self.fingerprint = fingerprint
        self.preparer = preparer
        self.family = family

    # --- locking and paths --------------------------------------------------------------------------
    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def path(self, name: str) -> Path:
        return self.root / (validate_name(name) + SUFFIX)

    def __contains__(self, name: str) -> bool:
        return self.path(name).is_file()

    @staticmethod
    def check_new_name(name: str) -> str:
        """A name a new voice may take: valid, and not `default` (the checkpoint's own voice goes by it)."""
        name = validate_name(name)
        if name.lower() == "default":
            raise VoiceError("'default' names the checkpoint's built-in voice; choose another name")
        return name

    # --- writing ------------------------------------------------------------------------------------
    def add(self, name: str, audio, sample_rate: int | None = None, exaggeration: float = 0.5,
            overwrite: bool = False, language: str | None = None) -> Voice:
        """Prepare `audio` (a path or an array with `sample_rate`) and store it as `name`. The same audio
        already prepared for this checkpoint is reused, not prepared again. `language`: the language the voice
        speaks (one of the multilingual model's ids), used by that model's requests that name none."""
        from ..audio.io import read_audio, resample, to_mono
        from ..text.multilingual import check_language
        language = None if language is None else check_language(language)
        path = self.path(self.check_new_name(name))
        if not overwrite and path.exists():
            raise VoiceExists(f"voice {validate_name(name)!r} already exists (use overwrite)")
        if isinstance(audio, (str, os.PathLike)):
            wav, sr = read_audio(audio, MAX_SOURCE_SECONDS)
        else:
            if sample_rate is None:
                raise ValueError("sample_rate is required when audio is an array")
            wav, sr = to_mono(audio), int(sample_rate)
        if not np.all(np.isfinite(wav)):
            raise VoiceError("the audio contains NaN or infinite samples")
        wav = wav[: int(MAX_SOURCE_SECONDS * sr)]  # a bounded source clip: an hour-long upload keeps 30 s
        pcm = _to_pcm16(resample(wav, sr, 24000))
        sha = hashlib.sha256(pcm.tobytes()).hexdigest()
        twin = self._find_prepared(sha)
        if twin is not None:
            voice = Voice(**twin.tensors(), exaggeration=float(exaggeration), meta=dict(twin.meta))
        else:
            if self.preparer is None:
                raise VoiceError("adding a voice needs a model to prepare it (open the library through a TTS)")
            voice = self.preparer(pcm.astype(np.float32) / 32768.0, 24000, exaggeration)
        voice.meta.pop("language", None)  # the twin's language is the twin's, not this voice's
        if language is not None:
            voice.meta["language"] = language
        return self._store(name, voice, pcm, sha, overwrite)

    def add_voice(self, name: str, voice: Voice, overwrite: bool = False) -> Voice:
        """Store an already prepared voice (no source audio: it cannot be re-prepared later)."""
        return self._store(name, voice, None, voice.meta.get("source_sha256", ""), overwrite)

    def _store(self, name, voice: Voice, pcm, sha, overwrite) -> Voice:
        name = validate_name(name)
        meta = {k: v for k, v in voice.meta.items() if k in ("prepare_s", "duration_s", "sample_rate", "source",
                                                              "language")}
        meta.update(name=name, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    checkpoint=self.fingerprint or voice.meta.get("checkpoint", ""), source_sha256=sha,
                    cadence_version=_version(), has_source=pcm is not None,
                    family=voice.meta.get("family", self.family))
        if pcm is not None:
            meta["duration_s"] = round(len(pcm) / 24000, 3)
        stored = Voice(**voice.tensors(), exaggeration=float(voice.exaggeration), meta=meta)
        extra = {"source_pcm16": torch.from_numpy(pcm)} if pcm is not None else {}
        with self._locked():
            if not overwrite and self.path(name).exists():
                raise VoiceExists(f"voice {name!r} already exists (use overwrite)")
            save_voice(self.path(name), stored, extra)
        return stored

    def _find_prepared(self, sha: str) -> Voice | None:
        fp = self.fingerprint or ""
        for p in sorted(self.root.glob("*" + SUFFIX)) if self.root.is_dir() else []:
            try:  # headers only: a library of thousands of voices is not read whole on every add
                meta = read_meta(p)
                ours = (meta.get("checkpoint") == fp and _family(meta) == self.family
                        or meta.get("prepared", {}).get(self.family, {}).get("checkpoint") == fp)
                if meta.get("source_sha256") == sha and ours:
                    return self._preparation(*load_voice(p, with_extra=True))
            except VoiceFileError:
                continue
        return None

    def _preparation(self, voice: Voice, extra: dict) -> Voice | None:
        """This checkpoint's preparation in a voice file (its main tensors or the ones kept for our family)."""
        fp = self.fingerprint or ""
        # checkpoint "": a conds.pt taken as it is (the reference's own format), good for any checkpoint of its family
        if _family(voice.meta) == self.family and voice.meta.get("checkpoint", "") in (fp, ""):
            return voice
        kept = voice.meta.get("prepared", {}).get(self.family)
        if kept and kept.get("checkpoint") == fp and all(f"{self.family}/{k}" in extra for k in TENSORS):
            meta = {**voice.meta, "family": self.family, "checkpoint": fp}
            return Voice(**{k: extra[f"{self.family}/{k}"] for k in TENSORS}, exaggeration=voice.exaggeration,
                         meta=meta)
        return None

    def _keep_preparation(self, name: str, fresh: Voice) -> Voice:
        """Write `fresh` (this checkpoint's preparation) into the voice file: over its main tensors when they are
        of our family, else beside them, so the other family's preparation stays. The file is read again under
        the lock: another process may have added its own family's preparation meanwhile."""
        with self._locked():
            stored, extra = load_voice(self.path(name), with_extra=True)
            return self._merge(name, stored, extra, fresh)

    def _merge(self, name: str, stored: Voice, extra: dict, fresh: Voice) -> Voice:
        if _family(stored.meta) == self.family:
            meta = {**stored.meta, "checkpoint": self.fingerprint or "", "prepare_s": fresh.meta.get("prepare_s")}
            voice = Voice(**fresh.tensors(), exaggeration=stored.exaggeration, meta=meta)
        else:
            ours = {f"{self.family}/{k}": t.detach().cpu().contiguous() for k, t in fresh.tensors().items()}
            prepared = {**stored.meta.get("prepared", {}), self.family: {"checkpoint": self.fingerprint or ""}}
            voice = Voice(**stored.tensors(), exaggeration=stored.exaggeration,
                          meta={**stored.meta, "prepared": prepared})
            extra = {**extra, **ours}
        save_voice(self.path(name), voice, extra)
        return self._preparation(voice, extra)

    def remove(self, name: str) -> None:
        with self._locked():
            path = self.path(name)
            if not path.is_file():
                raise VoiceError(f"no voice named {validate_name(name)!r}")
            path.unlink()

    def rename(self, old: str, new: str) -> None:
        with self._locked():
            src, dst = self.path(old), self.path(new)
            if not src.exists():
                raise VoiceError(f"no voice named {validate_name(old)!r}")
            if dst.exists():
                raise VoiceExists(f"voice {validate_name(new)!r} already exists")
            voice, extra = load_voice(src, with_extra=True)
            voice.meta["name"] = validate_name(new)
            save_voice(dst, voice, extra)  # rewritten so the file's own name field stays true
            src.unlink()

    def export(self, name: str, dest: str | os.PathLike) -> Path:
        """One portable file (tensors, metadata and source audio) that `import_file` reads anywhere."""
        voice, extra = load_voice(self.path(name), with_extra=True)
        dest = Path(dest)
        if dest.is_dir():  # into a directory: under the voice's own name
            dest = dest / (validate_name(name) + SUFFIX)
        save_voice(dest, voice, extra)
        return dest

    def import_file(self, src: str | os.PathLike, name: str | None = None, overwrite: bool = False) -> Voice:
        voice, extra = load_voice(Path(src), with_extra=True)
        name = validate_name(name or voice.meta.get("name") or Path(src).stem)
        voice.meta["name"] = name
        with self._locked():
            if not overwrite and self.path(name).exists():
                raise VoiceExists(f"voice {name!r} already exists (use overwrite)")
            save_voice(self.path(name), voice, extra)
        return voice

    def import_conds(self, src: str | os.PathLike, name: str, overwrite: bool = False) -> Voice:
        """A `conds.pt` written by the reference package, taken as prepared for this checkpoint."""
        voice = Voice.from_conds_pt(src)
        voice.meta = {"source": f"conds.pt ({Path(src).name})"}
        return self._store(name, voice, None, "", overwrite)

    # --- reading ------------------------------------------------------------------------------------
    def get(self, name: str) -> Voice:
        path = self.path(name)
        if not path.exists():
            raise VoiceError(f"no voice named {validate_name(name)!r}")
        voice, extra = load_voice(path, with_extra=True)
        if not self.fingerprint:  # a library bound to no checkpoint reads voices as they are
            return voice
        mine = self._preparation(voice, extra)
        if mine is not None:
            return mine
        if self.preparer is None or "source_pcm16" not in extra:
            stored_for = voice.meta.get("checkpoint", "")
            raise VoiceError(
                f"voice {voice.meta.get('name', name)!r} was prepared for another checkpoint (Chatterbox "
                f"{_family(voice.meta)}, {stored_for[:12] or 'unknown'}; this is Chatterbox {self.family}, "
                f"{self.fingerprint[:12]}) and has no stored audio to prepare it from; add it again from its recording")
        pcm = extra["source_pcm16"].numpy()
        fresh = self.preparer(pcm.astype(np.float32) / 32768.0, 24000, voice.exaggeration)
        return self._keep_preparation(validate_name(name), fresh)

    def info(self, name: str) -> VoiceInfo:
        path = self.path(name)
        if not path.exists():
            raise VoiceError(f"no voice named {validate_name(name)!r}")
        v = load_voice(path)
        m = v.meta
        return VoiceInfo(name=m.get("name", name), duration_s=float(m.get("duration_s", 0.0)),
                         exaggeration=v.exaggeration, created=m.get("created", ""), bytes=path.stat().st_size,
                         checkpoint=m.get("checkpoint", ""), source_sha256=m.get("source_sha256", ""),
                         family=_family(m), families=tuple(sorted({_family(m), *m.get("prepared", {})})),
                         language=m.get("language"))

    def list(self) -> tuple[list[VoiceInfo], list[str]]:
        """(readable voices sorted by name, one error line per damaged file)."""
        infos, errors = [], []
        for p in sorted(self.root.glob("*" + SUFFIX)) if self.root.is_dir() else []:
            try:
                infos.append(self.info(p.name[: -len(SUFFIX)]))
            except (VoiceFileError, VoiceError) as exc:
                errors.append(str(exc))
        return infos, errors


def _family(meta: dict) -> str:
    return meta.get("family", "english")  # voice files from before Turbo hold the original model's voices


def _to_pcm16(wav: np.ndarray) -> np.ndarray:
    return np.clip(np.round(wav * 32768.0), -32768, 32767).astype(np.int16)


def _version() -> str:
    from .. import __version__
    return __version__
