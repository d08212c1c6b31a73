"""Turbo's text tokenizer: GPT-2's byte-level BPE (`vocab.json` + `merges.txt`, or a `tokenizer.json`) with the
19 paralinguistic tags as added tokens, so `[laugh]` is always one id. Turbo frames text with no start/stop
tokens."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

EXPECTED_VOCAB = 50276  # 50,257 GPT-2 ids + 19 tags


class TurboTokenizer:
    def __init__(self, directory: str | Path):
        d = Path(directory)
        try:
            if (d / "tokenizer.json").is_file():
                self.tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
            else:
                bpe = models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt"))
                self.tokenizer = Tokenizer(bpe)
                self.tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
                self.tokenizer.decoder = decoders.ByteLevel()
                added = d / "added_tokens.json"
                if added.is_file():
                    tokens = sorted(json.loads(added.read_text()).items(), key=lambda kv: kv[1])
                    self.tokenizer.add_tokens([AddedToken(t, normalized=False) for t, _ in tokens])
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{d}: not a readable GPT-2 tokenizer ({type(exc).__name__}: {exc})") from exc
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if size != EXPECTED_VOCAB:
            raise ValueError(f"{d}: Turbo's tokenizer has {EXPECTED_VOCAB} ids, this one has {size}")

    def encode(self, text: str, language: str | None = None) -> list[int]:
        """`language`: the family checks it (English only); the text is encoded the same either way."""
        return self.tokenizer.encode(text).ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)
