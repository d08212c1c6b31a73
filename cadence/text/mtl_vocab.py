"""The text files of a random multilingual checkpoint: a grapheme tokenizer of the official size (2,454 symbols:
the special tokens at the original's ids, the 23 `[lang]` tokens, the Cangjie code tokens, then the graphemes of
the 23 languages after lower-casing and NFKD) in `tokenizers`' JSON format, and a Cangjie table in the official
file's format (a JSON list of "glyph<TAB>code" lines). Only the files' formats are the official ones: which id a
grapheme gets, and which code a glyph gets, are this module's choice."""

from __future__ import annotations

import random

from .multilingual import LANGUAGES

SPECIALS = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "[PAD]": 3, "[SEP]": 4, "[CLS]": 5, "[MASK]": 6, "[START]": 255}
VOCAB_SIZE = 2454
CANGJIE_LETTERS = "abcdefghijklmnopqrstuvwxy"


def _ranges(*spans: tuple[int, int]) -> list[str]:
    return [chr(c) for a, b in spans for c in range(a, b + 1)]


def graphemes() -> list[str]:
    """What the 23 languages' text is made of once lower-cased and NFKD-decomposed, in a fixed order."""
    chars = _ranges((0x21, 0x40), (0x5B, 0x7E))  # ASCII punctuation, digits and lower-case letters
    chars += ["ß", "æ", "ø", "œ", "ı", "ð", "þ", "ł", "đ", "ħ", "«", "»", "¿", "¡", "…"]
    chars += _ranges((0x0300, 0x036F))  # combining marks: accents after NFKD
    chars += _ranges((0x03B1, 0x03C9), (0x0430, 0x044F), (0x0456, 0x0457), (0x0454, 0x0454))  # Greek, Cyrillic
    chars += _ranges((0x0621, 0x064A), (0x064B, 0x0652), (0x0660, 0x0669))  # Arabic letters, marks, digits
    chars += _ranges((0x05B0, 0x05C7), (0x05D0, 0x05EA))  # Hebrew points and letters
    chars += _ranges((0x0900, 0x097F))  # Devanagari
    chars += _ranges((0x3041, 0x3096), (0x3099, 0x309C), (0x30A1, 0x30FC))  # kana, (semi-)voiced marks
    chars += _ranges((0x1100, 0x11FF))  # Hangul Jamo
    chars += ["、", "。", "，", "？", "！", "「", "」", "・", "ー"]
    seen, out = set(), []
    for c in chars:
        if c not in seen and c != " ":
            seen.add(c)
            out.append(c)
    return out


def grapheme_tokenizer_json() -> dict:
    """A `tokenizers` JSON of VOCAB_SIZE symbols: one id per grapheme (no merges), the special, language and
    Cangjie tokens as added tokens so each is always one id; CJK glyphs fill the rest."""
    specials = dict(SPECIALS)
    marks = [f"[{lang}]" for lang in LANGUAGES] + [f"[cj_{c}]" for c in CANGJIE_LETTERS + ".0123456789"]
    vocab, next_id = dict(specials), 7
    added_ids = []
    for token in marks:
        if next_id == 255:
            next_id += 1
        vocab[token] = next_id
        added_ids.append((token, next_id))
        next_id += 1
    glyph = 0x4E00
    symbols = graphemes()
    while len(vocab) < VOCAB_SIZE:
        if next_id == 255:
            next_id += 1
        if symbols:
            sym = symbols.pop(0)
        else:
            sym, glyph = chr(glyph), glyph + 1
        vocab[sym] = next_id
        next_id += 1
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for t, i in sorted(list(specials.items()) + added_ids, key=lambda kv: kv[1])]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": None, "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": []}}


def cangjie_table(n_glyphs: int = 3000, seed: int = 0) -> list[str]:
    """Cangjie5_TC.json's format: "glyph\\tcode" for the first `n_glyphs` CJK glyphs, with codes of one to five
    letters drawn from `seed`; some codes are shared, so glyphs also carry a rank (their place among a code's)."""
    rnd = random.Random(seed)
    codes = ["".join(rnd.choice(CANGJIE_LETTERS) for _ in range(rnd.randint(1, 5))) for _ in range(n_glyphs // 2)]
    return [f"{chr(0x4E00 + i)}\t{rnd.choice(codes)}" for i in range(n_glyphs)]
