"""The one exception type for mistakes a user can make (bad names, files, numbers)."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path


class PartialFTError(ValueError):
    """A user-caused error: one sentence naming the bad value and what would be valid.

    The CLI prints it without a traceback and exits with code 2. ``cli`` is the same sentence
    worded for the command line (flags instead of keyword arguments); build both from one
    template with :func:`option_error`.
    """

    def __init__(self, message: str = "", cli: str | None = None) -> None:
        super().__init__(message)
        self.cli = cli

    def for_cli(self) -> str:
        """The message as the command line words it (``--angles FILE``, not ``angles=FILE``)."""
        return self.cli or str(self)


# `name`, `name=VALUE` or `name=LIBRARY VALUE|CLI VALUE` in backticks: an option in a template
_OPTION = re.compile(r"`([a-z][a-z0-9_]*)(?:=([^`|]*)(?:\|([^`]*))?)?`")


def for_library(template: str) -> str:
    """A template worded for a Python caller: `angles=FILE` -> angles=FILE, `rank` -> rank."""
    return _OPTION.sub(lambda m: m[1] + (f"={m[2]}" if m[2] is not None else ""), template)


def for_cli(template: str) -> str:
    """A template worded for the command line: `angles=FILE` -> --angles FILE, `rank` ->
    --rank, `allow_base_mismatch=True` -> --allow-base-mismatch, `pretrained=False` ->
    --no-pretrained."""

    def flag(m: re.Match) -> str:
        value = m[3] if m[3] is not None else m[2]
        name = m[1].replace("_", "-")
        if value == "False":
            return f"--no-{name}"
        return f"--{name}" if value in (None, "True") else f"--{name} {value}"

    return _OPTION.sub(flag, template)


def option_error(template: str, /, **values: object) -> PartialFTError:
    """One error worded twice: options in backticks become keyword arguments in the library's
    message and flags in the CLI's (see :func:`for_library`, :func:`for_cli`). With ``values``,
    ``{name}`` fields (``str.format``) are filled after the wording, so a backtick in a path or
    an exception's text is never read as an option."""
    library, cli = for_library(template), for_cli(template)
    if values:
        library, cli = library.format(**values), cli.format(**values)
    return PartialFTError(library, cli=cli)


def named_option(name: str) -> str:
    """A setting's name as a template option with a ``{value}`` field (fill it through
    :func:`option_error`'s values): ``--img-size`` -> `img_size={value}` (img_size=... for a
    library caller, --img-size ... on the command line); a name that is no flag (``img_size``,
    ``a rerun``) stays as it is: ``img_size {value}``."""
    if name.startswith("--"):
        return f"`{name[2:].replace('-', '_')}={{value}}`"
    return f"{name} {{value}}"


def suggest(value: str, valid: Iterable[str], limit: int = 5) -> str:
    """Return ' (did you mean a, b?)' for close matches of ``value`` among ``valid``, else ''."""
    close = difflib.get_close_matches(value, list(valid), n=limit, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def article(word: str) -> str:
    """The English article before ``word`` in a message: 'an' before a vowel, else 'a'."""
    return "an" if word[:1] in "aeiou" else "a"


def first_items(items: Iterable[str], limit: int = 5) -> str:
    """Comma-join the first ``limit`` items, noting how many more there are."""
    items = list(items)
    head = ", ".join(items[:limit])
    return head + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_input_file(path: Path, what: str, valid: str) -> None:
    """Raise one clear sentence unless ``path`` is a regular file that can be read."""
    if not path.exists():
        raise PartialFTError(f"{what} {path} does not exist; pass {valid}.")
    if path.is_dir():
        raise PartialFTError(f"{what} {path} is a directory; pass {valid}.")
    if not path.is_file():
        raise PartialFTError(f"{what} {path} is not a regular file (a device or pipe); pass "
                             f"{valid}.")
    if not os.access(path, os.R_OK):
        raise PartialFTError(f"{what} {path} cannot be read (permission denied); pass {valid}.")


def read_text_file(path: Path, what: str, valid: str) -> str:
    """The UTF-8 text of a user's file (config, layer spec), or one clear sentence."""
    check_input_file(path, what, valid)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PartialFTError(f"{what} {path} is not UTF-8 text (byte {exc.start} is "
                             f"0x{exc.object[exc.start]:02x}); save it as UTF-8.") from None


def user_message(exc: BaseException) -> str:
    """One line for the CLI: an error re-raised from a DataLoader worker carries the worker's
    traceback in its message; only the error's own last line is the user's business."""
    text = exc.for_cli() if isinstance(exc, PartialFTError) else str(exc)
    if "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        text = last.split(": ", 1)[1] if last.startswith(("partialft.", "PartialFTError")) else last
    return text.replace("\r", "\\r").replace("\n", "\\n")
