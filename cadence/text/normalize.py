"""Text clean-up applied before tokenising, identical to the reference's `punc_norm` (the original model's, and
Turbo's, which maps fewer characters)."""

from __future__ import annotations

EMPTY_TEXT = "You need to add some text for me to talk."

_REPLACEMENTS = (
    ("...", ", "), ("…", ", "), (":", ","), (" - ", ", "), (";", ", "), ("—", "-"), ("–", "-"),
    (" ,", ","), ("“", '"'), ("”", '"'), ("‘", "'"), ("’", "'"),
)
# Turbo keeps "...", " - " and ";" as they are.
_TURBO_REPLACEMENTS = (
    ("…", ", "), (":", ","), ("—", "-"), ("–", "-"), (" ,", ","), ("“", '"'), ("”", '"'), ("‘", "'"), ("’", "'"),
)
_ENDERS = (".", "!", "?", "-", ",")
# The multilingual model's text may also end on CJK punctuation.
_MTL_ENDERS = _ENDERS + ("、", "，", "。", "？", "！")


def normalize_text(text: str, replacements: tuple = _REPLACEMENTS, enders: tuple = _ENDERS) -> str:
    """Capitalise, collapse whitespace, map rare punctuation to what the model saw, end with punctuation."""
    if not text:
        return EMPTY_TEXT
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = " ".join(text.split())
    for old, new in replacements:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    if not text.endswith(enders):
        text += "."
    return text


def normalize_turbo_text(text: str) -> str:
    """Turbo's clean-up: as `normalize_text`, with Turbo's shorter list of replacements."""
    return normalize_text(text, _TURBO_REPLACEMENTS)


def normalize_multilingual_text(text: str) -> str:
    """The multilingual model's clean-up: the original's, with CJK sentence ends counted as ends."""
    return normalize_text(text, _REPLACEMENTS, _MTL_ENDERS)
