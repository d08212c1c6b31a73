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


def _split_word(word: str, count: Callable[[str], int], budget: int) -> list[str]:
    """A single word over budget (a URL, a run of digits): cut into the longest pieces that fit."""
    out, rest = [], word
    while rest:
        lo, hi = 1, len(rest)
        while lo < hi:  # the longest prefix within budget (at least one character)
            mid = (lo + hi + 1) // 2
            if count(rest[:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        out.append(rest[:lo])
        rest = rest[lo:]
    return out


def _split_long(piece: str, count: Callable[[str], int], budget: int) -> list[str]:
    """One sentence over budget: cut at clause marks, then between words (into pieces of even size, so no
    piece is a stray tail), then inside a word that alone is over budget."""
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
        words: list[str] = []
        for w in part.split():
            words.extend([w] if count(w) <= budget else _split_word(w, count, budget))
        fewest = max(1, -(-count(part) // budget))  # no fewer pieces can fit
        for n in range(fewest, len(words) + 1):  # the fewest even pieces of whole words that all fit
            pieces = _even_pieces(words, n)
            if all(count(p) <= budget for p in pieces):
                break
        else:  # runs of abbreviations left no even cut: fill greedily, a word at a time
            pieces, cur = [], []
            for w in words:
                if cur and count(" ".join(cur + [w])) > budget:
                    pieces.append(" ".join(cur))
                    cur = []
                cur.append(w)
            pieces += [" ".join(cur)] if cur else []
        out.extend(pieces)
    return _pack(out, count, budget)


def _sticky(word: str) -> bool:
    """A word a cut must not follow: an abbreviation or an initial ("Dr.", "J.")."""
    bare = word.rstrip(".").lower().lstrip("\"'“‘([")
    return word.endswith(".") and (bare in ABBREVIATIONS or re.fullmatch(r"[a-z]", bare) is not None)


def _even_pieces(words: list[str], n: int) -> list[str]:
    """`words` in `n` runs of near-equal length, each cut moved past an abbreviation or initial."""
    size = -(-len(words) // n)
    cuts, last = [], 0
    for c in range(size, len(words), size):
        c = max(c, last + 1)
        while c < len(words) - 1 and _sticky(words[c - 1]):
            c += 1
        if c < len(words):
            cuts.append(c)
            last = c
    bounds = [0, *cuts, len(words)]
    return [" ".join(words[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


def _pack(pieces: list[str], count: Callable[[str], int], budget: int) -> list[str]:
    chunks: list[str] = []
    for p in pieces:
        if chunks and count(chunks[-1] + " " + p) <= budget:
            chunks[-1] = chunks[-1] + " " + p
        else:
            chunks.append(p)
    return chunks


def split_paragraphs(text: str, count: Callable[[str], int] | None = None,
                     max_tokens: int = DEFAULT_MAX_TOKENS) -> list[list[str]]:
    """The chunks of each paragraph (paragraphs: text between blank lines), each chunk with
    count(chunk) <= max_tokens. No chunk spans two paragraphs, and a sentence cut for being too long is never
    packed with the next sentence (a chunk never starts in the middle of a sentence that began in another)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    count = count or (lambda s: len(s.split()))
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = re.sub(r"\s+", " ", paragraph).strip()
        if not paragraph:
            continue
        chunks: list[str] = []
        whole: list[str] = []  # sentences that fit, packed together
        for sentence in _sentences(paragraph):
            if count(sentence) <= max_tokens:
                whole.append(sentence)
                continue
            chunks += _pack(whole, count, max_tokens) + _split_long(sentence, count, max_tokens)
            whole = []
        out.append(chunks + _pack(whole, count, max_tokens))
    return out


def split_text(text: str, count: Callable[[str], int] | None = None,
               max_tokens: int = DEFAULT_MAX_TOKENS) -> list[str]:
    """Chunks of `text`, each with count(chunk) <= max_tokens (see `split_paragraphs`, whose chunks these are,
    in order). `count` measures a chunk in the model's text tokens (default: words)."""
    return [c for chunks in split_paragraphs(text, count, max_tokens) for c in chunks]
