"""Long text -> chunks the model renders well: cut at sentence ends, then clauses, then words, each chunk
within a token budget. Abbreviations, initials, decimals and quotes stay intact, and no text is ever dropped:
the chunks' words, in order, are exactly the input's words."""

from __future__ import annotations

import re
from typing import Callable

# Words ending in '.' that do not end a sentence.
ABBREVIATIONS = frozenset("""mr mrs ms dr prof sr jr st mt vs etc e.g i.e cf al fig no vol p pp ch sec approx dept est
inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun u.s u.k a.m p.m""".split())
_SENTENCE_END = re.compile(r"""([.!?…]+["'”’)\]]*)(\s+)""")
_CLAUSE_END = re.compile(r"""([,;:—–]["'”’)\]]*)(\s+)""")

DEFAULT_MAX_TOKENS = 60
"""Text tokens per chunk. T3 stops at 1,000 speech tokens (40 s) and degrades well before; at ~3 speech tokens
per text token (25 tokens/s of speech) 60 text tokens is about 15-25 s of audio, inside the model's range."""


def _sentences(text: str) -> list[str]:
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end(1)
        word = text[start:end].split()[-1] if text[start:end].split() else ""
        bare = word.rstrip(".!?…\"'”’)]").lower().lstrip("\"'“‘([")
        if m.group(1).startswith(".") and len(m.group(1)) == 1 and (bare in ABBREVIATIONS or
                                                                    re.fullmatch(r"[a-z]", bare)):
            continue  # "Dr. Smith", "J. R. R. Tolkien": not a sentence end
        out.append(text[start:end].strip())
        start = m.end()
    tail = text[start:].strip()
    return [s for s in out + [tail] if s]


def _split_long(piece: str, count: Callable[[str], int], budget: int) -> list[str]:
    """One sentence over budget: cut at clause marks, then between words."""
    parts, start = [], 0
    for m in _CLAUSE_END.finditer(piece):
        parts.append(piece[start:m.end(1)].strip())
        start = m.end()
    parts.append(piece[start:].strip())
    out: list[str] = []
    for part in (p for p in parts if p):
        if count(part) <= budget:
            out.append(part)
            continue
        words, cur = part.split(), []
        for w in words:
            if cur and count(" ".join(cur + [w])) > budget:
                out.append(" ".join(cur))
                cur = []
            cur.append(w)
        if cur:
            out.append(" ".join(cur))
    return _pack(out, count, budget)


def _pack(pieces: list[str], count: Callable[[str], int], budget: int) -> list[str]:
    chunks: list[str] = []
    for p in pieces:
        if chunks and count(chunks[-1] + " " + p) <= budget:
            chunks[-1] = chunks[-1] + " " + p
        else:
            chunks.append(p)
    return chunks


def split_text(text: str, count: Callable[[str], int] | None = None,
               max_tokens: int = DEFAULT_MAX_TOKENS) -> list[str]:
    """Chunks of `text`, each with count(chunk) <= max_tokens where a single word allows it. `count` measures a
    chunk in the model's text tokens (default: words)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    count = count or (lambda s: len(s.split()))
    text = re.sub(r"\s+", " ", text).strip()
    pieces: list[str] = []
    for sentence in _sentences(text):
        pieces.extend([sentence] if count(sentence) <= max_tokens else _split_long(sentence, count, max_tokens))
    return _pack(pieces, count, max_tokens)
