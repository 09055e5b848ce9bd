"""A finished output's marker carried inside one of its own files, so the folder holds no
partialft file: an export (a folder people upload to the Hugging Face Hub as it is) keeps its
manifest as an HTML comment on the last line of its model card, ``README.md``.

While the output is written it has an ordinary ``.partialft`` marker (see :mod:`utils.io`);
:func:`embed` then appends the marker, with ``complete: true``, to the card (itself an atomic
write recorded in the ``.partialft`` manifest) and only after that removes ``.partialft``. A kill
between the two leaves the incomplete ``.partialft`` in force (it wins when both are there), so
the rerun redoes the output as before. The card records its own bytes as the SHA-256 of its text
before the comment: an edited card is the user's, and ``--overwrite`` refuses to delete it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from partialft.utils.io import atomic_write_text

CARD = "README.md"
_TAG, _END = "<!-- partialft ", " -->"
_MAX_BYTES = 4 << 20  # a model card; a larger README.md is not one partialft wrote


def split(text: str) -> tuple[str, dict[str, Any] | None]:
    """(the card's text before the embedded marker, the marker or None)."""
    start = text.rfind("\n" + _TAG)
    if start < 0:
        return text, None
    line = text[start + 1 + len(_TAG):].rstrip("\n")
    if not line.endswith(_END):
        return text, None
    try:
        marker = json.loads(line[: -len(_END)])
    except (ValueError, RecursionError):
        return text, None
    return (text[:start + 1], marker) if isinstance(marker, dict) else (text, None)


def read_embedded(folder: str | Path) -> dict[str, Any] | None:
    """The marker carried in ``folder``'s model card, or None when it has none."""
    card = Path(folder) / CARD
    try:
        if card.is_symlink() or not card.is_file() or card.stat().st_size > _MAX_BYTES:
            return None
        return split(card.read_text(encoding="utf-8"))[1]
    except (OSError, UnicodeDecodeError):
        return None


def body_sha256(path: str | Path) -> str | None:
    """SHA-256 of a card's text before its embedded marker (None when unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return hashlib.sha256(split(text)[0].encode()).hexdigest()


def embed(folder: Path, marker: dict[str, Any]) -> None:
    """Append ``marker`` (its settings left out: they name local paths) to ``folder``'s card,
    the card recorded in it by the SHA-256 of its text; the caller then removes ``.partialft``."""
    body = split((folder / CARD).read_text(encoding="utf-8"))[0]
    body += "" if body.endswith("\n") else "\n"  # the comment on a line of its own
    files = {name: {"sha256": e["sha256"], "size": e.get("size")}
             for name, e in (marker.get("files") or {}).items()
             if isinstance(e, dict) and e.get("sha256") and name != CARD
             and (folder / name).is_file()}
    files[CARD] = {"embedded": True, "sha256": hashlib.sha256(body.encode()).hexdigest()}
    keep = {k: v for k, v in marker.items() if k not in ("settings", "files", "dirs")}
    line = json.dumps({**keep, "files": files, "dirs": {}}, separators=(",", ":"))
    atomic_write_text(folder / CARD, f"{body}{_TAG}{line}{_END}\n")
