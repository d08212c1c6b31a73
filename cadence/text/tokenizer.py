"""The English text tokenizer: the checkpoint's `tokenizer.json` (BPE) through `tokenizers`, with spaces
spelled as the [SPACE] token."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

START, STOP, SPACE = "[START]", "[STOP]", "[SPACE]"


class TextTokenizer:
    def __init__(self, path: str | Path):
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{path}: not a readable tokenizer.json ({exc})") from exc
        vocab = self.tokenizer.get_vocab()
        missing = [t for t in (START, STOP) if t not in vocab]
        if missing:
            raise ValueError(f"{path}: tokenizer lacks {', '.join(missing)}")

    def encode(self, text: str, language: str | None = None) -> list[int]:
        """`language`: the family checks it (English only); the text is encoded the same either way."""
        return self.tokenizer.encode(text.replace(" ", SPACE)).ids

    def decode(self, ids) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        return text.replace(" ", "").replace(SPACE, " ").replace(STOP, "").replace("[UNK]", "")
