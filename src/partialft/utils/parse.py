"""Parse a user's YAML or JSON text safely: one loader for configs, layer specs, angles files
and ``key=value`` flag values.

Both parsers recurse once per nesting level, so a file nested a few thousand levels deep raises
``RecursionError`` (a traceback, or worse further down when the value is copied or dumped).
YAML aliases (``*name``) share one object between places; a few nested aliases expand
exponentially when the value is copied (``dataclasses.asdict``) or written back (the
"billion laughs" file). partialft's files need neither, so both are refused with one sentence:
nesting deeper than :data:`MAX_DEPTH`, and any alias. Only YAML's safe constructors run.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from partialft.errors import PartialFTError

# deeper than any file partialft reads (a layer spec nests 4 levels) and far below Python's
# recursion limit, so the checks below stay well clear of it
MAX_DEPTH = 32


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses aliases and deep nesting while composing the document."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise _Refused(f"uses a YAML alias at line {mark.line + 1} (*{self.peek_event().anchor}"
                           "), which partialft does not accept; write the value out in full")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise _Refused(f"nests deeper than {MAX_DEPTH} levels (at line {mark.line + 1}); "
                           "partialft's files need a few levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Refused(Exception):
    pass


def load_yaml(text: str, what: str) -> Any:
    """The value of YAML ``text`` (safe constructors only); ``what`` names the source in the
    one-sentence error ('config x.yaml')."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()  # what yaml.safe_load does, with the checks above
    except _Refused as exc:
        raise PartialFTError(f"{what} {exc}.") from None
    except RecursionError:  # a flow sequence [[[[...]]]] nests inside the scanner itself
        raise PartialFTError(f"{what} nests too deeply to read; partialft's files need a few "
                             "levels.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PartialFTError(f"{what} is not valid YAML{where}: {problem}.") from None
    finally:
        loader.dispose()


def load_json(text: str, what: str) -> Any:
    """The value of JSON ``text``, refused (one sentence) when malformed or nested deeper than
    :data:`MAX_DEPTH`."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise PartialFTError(f"{what} nests too deeply to read; partialft's files need a few "
                             "levels.") from None
    except ValueError as exc:
        raise PartialFTError(f"{what} is not valid JSON ({str(exc).splitlines()[0]}).") from None
    if depth(value) > MAX_DEPTH:
        raise PartialFTError(f"{what} nests deeper than {MAX_DEPTH} levels; partialft's files "
                             "need a few levels.")
    return value


def depth(value: Any) -> int:
    """Nesting depth of lists and dicts (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else (
            item if isinstance(item, list) else None)
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:  # deeper is refused anyway: stop counting
            stack.extend((child, level + 1) for child in children)
    return deepest
