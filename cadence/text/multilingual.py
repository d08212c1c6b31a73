"""Chatterbox Multilingual's text front-end: the grapheme tokenizer (`grapheme_mtl_merged_expanded_v1.json`
through `tokenizers`) and the per-language steps before it, in the reference's order: lowercase, NFKD, the
language's own step (zh: Cangjie codes after word segmentation; ja: kanji to hiragana; he: diacritics; ko: Hangul
to Jamo; ru: stress marks), then the `[lang]` prefix and spaces spelled `[SPACE]`.

A language whose step needs a package that is not installed is refused with the extra that brings it
(`cadence-tts[languages]`): the reference logs a warning and goes on without the step, which changes the tokens
the model hears; Cadence never does that silently."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from tokenizers import Tokenizer

START, STOP, SPACE, UNK = "[START]", "[STOP]", "[SPACE]", "[UNK]"
TOKENIZER_FILE = "grapheme_mtl_merged_expanded_v1.json"
CANGJIE_FILE = "Cangjie5_TC.json"

LANGUAGES = {"ar": "Arabic", "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
             "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "it": "Italian", "ja": "Japanese",
             "ko": "Korean", "ms": "Malay", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
             "ru": "Russian", "sv": "Swedish", "sw": "Swahili", "tr": "Turkish", "zh": "Chinese"}
"""The 23 language ids of the multilingual checkpoint, with their names."""

EXTRA = "pip install 'cadence-tts[languages]'"


def check_language(language: str | None) -> str:
    """A language id as the model takes it (lower case) or a ValueError naming the 23."""
    if not isinstance(language, str) or language.strip().lower() not in LANGUAGES:
        given = "no language" if language is None else f"language {language!r}"
        raise ValueError(f"{given}: the multilingual model speaks {', '.join(LANGUAGES)}; set language to one of them")
    return language.strip().lower()


def _needs(module: str, language: str, package: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{LANGUAGES[language]} ({language}) text needs the package {package}: {EXTRA}") from None


# --- the per-language steps -------------------------------------------------------------------------------------
def hangul_to_jamo(text: str) -> str:
    """Korean: each precomposed syllable as its leading consonant, vowel and (if any) trailing consonant."""
    out = []
    for ch in text:
        code = ord(ch) - 0xAC00
        if 0 <= code <= 0xD7AF - 0xAC00:  # the reference's range: the syllables block and the 12 code points after it
            out.append(chr(0x1100 + code // 588) + chr(0x1161 + (code % 588) // 28)
                       + (chr(0x11A7 + code % 28) if code % 28 else ""))
        else:
            out.append(ch)
    return "".join(out).strip()


def _is_kanji(ch: str) -> bool:
    return 0x4E00 <= ord(ch) <= 0x9FFF


def _is_katakana(ch: str) -> bool:
    return 0x30A1 <= ord(ch) <= 0x30FA


class _Japanese:
    """Kanji to hiragana (pykakasi), katakana kept, then NFKD."""

    def __init__(self):
        self.kakasi = _needs("pykakasi", "ja", "pykakasi").kakasi()

    def __call__(self, text: str) -> str:
        out = []
        for part in self.kakasi.convert(text):
            orig, hira = part["orig"], part["hira"]
            if any(_is_kanji(c) for c in orig):
                out.append(" " + hira if hira and hira[0] in ("は", "へ") else hira)
            else:  # katakana and everything else as written
                out.append(orig)
        return unicodedata.normalize("NFKD", "".join(out))


class _Chinese:
    """Word segmentation (spacy-pkuseg), then every Chinese glyph as its Cangjie code spelled in `[cj_x]` tokens
    plus `[cj_.]`, with the glyph's rank among those sharing the code appended (from the checkpoint's
    Cangjie5_TC.json)."""

    def __init__(self, cangjie_file: Path):
        if not cangjie_file.is_file():
            raise ValueError(f"Chinese (zh) text needs {CANGJIE_FILE} in the checkpoint directory")
        self.code_of: dict[str, str] = {}
        glyphs_of: dict[str, list[str]] = {}
        for entry in json.loads(cangjie_file.read_text(encoding="utf-8")):
            glyph, code = entry.split("\t")[:2]
            self.code_of[glyph] = code
            glyphs_of.setdefault(code, []).append(glyph)
        self.rank = {g: (str(gs.index(g)) if gs.index(g) else "") for gs in glyphs_of.values() for g in gs}
        pkuseg = _needs("spacy_pkuseg", "zh", "spacy-pkuseg")
        try:
            self.segmenter = pkuseg.pkuseg()
        except Exception as exc:  # noqa: BLE001 - it downloads its model on first use
            raise ValueError(f"Chinese (zh) text: spacy-pkuseg could not load its segmentation model "
                             f"({type(exc).__name__}); it downloads it once, on first use, from GitHub") from None

    def __call__(self, text: str) -> str:
        out = []
        for ch in " ".join(self.segmenter.cut(text)):
            code = self.code_of.get(ch) if unicodedata.category(ch) == "Lo" else None
            if code is None:
                out.append(ch)
            else:
                out.append("".join(f"[cj_{c}]" for c in code + self.rank[ch]) + "[cj_.]")
        return "".join(out)


class _Hebrew:
    def __init__(self):
        self.dicta = _needs("dicta_onnx", "he", "dicta-onnx").Dicta()

    def __call__(self, text: str) -> str:
        return self.dicta.add_diacritics(text)


class _Russian:
    def __init__(self):
        try:
            import importlib
            stresser = importlib.import_module("russian_text_stresser.text_stresser")
        except ImportError:
            raise ValueError("Russian (ru) text needs the package russian-text-stresser for its stress marks "
                             "(not on PyPI: install it from its repository)") from None
        self.stresser = stresser.RussianTextStresser()

    def __call__(self, text: str) -> str:
        return self.stresser.stress_text(text)


class MultilingualTokenizer:
    """`encode(text, language)` -> ids, as the reference's `MTLTokenizer.encode` gives them."""

    def __init__(self, directory: str | Path):
        d = Path(directory)
        try:
            self.tokenizer = Tokenizer.from_file(str(d / TOKENIZER_FILE))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{d / TOKENIZER_FILE}: not a readable tokenizer ({exc})") from exc
        vocab = self.tokenizer.get_vocab()
        missing = [t for t in (START, STOP, SPACE) if t not in vocab]
        if missing:
            raise ValueError(f"{d / TOKENIZER_FILE}: tokenizer lacks {', '.join(missing)}")
        self.directory = d
        self._steps: dict[str, object] = {}  # built on first use: their packages load models

    def _step(self, language: str):
        if language not in self._steps:
            self._steps[language] = {"ko": lambda: hangul_to_jamo, "ja": _Japanese, "he": _Hebrew, "ru": _Russian,
                                     "zh": lambda: _Chinese(self.directory / CANGJIE_FILE)}.get(
                                         language, lambda: None)()
        return self._steps[language]

    def prepare(self, text: str, language: str | None) -> str:
        """The text as the tokenizer reads it: lower case, NFKD, the language's step, `[lang]` first."""
        language = check_language(language)
        text = unicodedata.normalize("NFKD", text.lower())
        step = self._step(language)
        if step is not None:
            text = step(text)
        return f"[{language}]{text}".replace(" ", SPACE)

    def encode(self, text: str, language: str | None = None) -> list[int]:
        return self.tokenizer.encode(self.prepare(text, language)).ids

    def decode(self, ids) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        return text.replace(" ", "").replace(SPACE, " ").replace(STOP, "").replace(UNK, "")
