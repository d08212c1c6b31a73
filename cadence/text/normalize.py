"""Text clean-up applied before tokenising, identical to the reference's `punc_norm`."""

from __future__ import annotations

EMPTY_TEXT = "You need to add some text for me to talk."

_REPLACEMENTS = (
    ("...", ", "), ("…", ", "), (":", ","), (" - ", ", "), (";", ", "), ("—", "-"), ("–", "-"),
    (" ,", ","), ("“", '"'), ("”", '"'), ("‘", "'"), ("’", "'"),
)
_ENDERS = (".", "!", "?", "-", ",")


def normalize_text(text: str) -> str:
    """Capitalise, collapse whitespace, map rare punctuation to what the model saw, end with punctuation."""
    if not text:
        return EMPTY_TEXT
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = " ".join(text.split())
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    if not text.endswith(_ENDERS):
        text += "."
    return text
