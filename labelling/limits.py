"""Sizes every way into the labelling data shares: imports, corrections, notes.

One rule per kind of input, so a value one path accepts is not refused (or
cut short) by another.
"""

# The longest string value a sample's field may hold, as imported or corrected
# (about 15,000 words: any review or document we label, not a dump by mistake).
MAX_VALUE_CHARS = 100_000

# The longest free-text note: flags, their resolution, corrections, adjudications.
MAX_NOTE_CHARS = 2000


def value_too_long(value) -> str | None:
    """Why ``value`` is too long for a field (the reason, completing
    "this value …"), or None when it fits or is no string."""
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return f"is {len(value):,} characters long; a value may have at most {MAX_VALUE_CHARS:,}"
    return None


def note_too_long(note, what="The note") -> str | None:
    """Why ``note`` is refused (a sentence), or None when it fits."""
    if isinstance(note, str) and len(note) > MAX_NOTE_CHARS:
        return (
            f"{what} is {len(note):,} characters long; keep it to {MAX_NOTE_CHARS:,} "
            "characters at most."
        )
    return None
