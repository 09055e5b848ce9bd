"""The one exception type for mistakes a user can make (bad names, files, numbers)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PartialFTError(ValueError):
    """A user-caused error: one sentence naming the bad value and what would be valid.

    The CLI prints it without a traceback and exits with code 2.
    """


def suggest(value: str, valid: Iterable[str], limit: int = 5) -> str:
    """Return ' (did you mean a, b?)' for close matches of ``value`` among ``valid``, else ''."""
    close = difflib.get_close_matches(value, list(valid), n=limit, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def first_items(items: Iterable[str], limit: int = 5) -> str:
    """Comma-join the first ``limit`` items, noting how many more there are."""
    items = list(items)
    head = ", ".join(items[:limit])
    return head + (f" and {len(items) - limit} more" if len(items) > limit else "")
