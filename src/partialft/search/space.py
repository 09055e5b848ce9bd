"""The search space of ``partialft search``: FAPFT's mode, top-k per group, learning rate.

A space is a YAML mapping (or the ``--search-*`` flags)::

    mode: [large, small]      # one or both
    topk: [1, 6]              # per-group top-k, a range of whole numbers (or one number)
    lr: [3.0e-4, 3.0e-3]      # learning rate, sampled log-uniformly (or one number)

A key left out keeps the recipe's value (its ``topk``, ``lr``; mode defaults to both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError

MODES = ("large", "small")
KEYS = ("mode", "topk", "lr")


@dataclass(frozen=True)
class SearchSpace:
    """Choices a search samples: ``modes`` (subset of large, small), ``topk`` (inclusive range
    of per-group top-k), ``lr`` (inclusive log-uniform range)."""

    modes: tuple[str, ...] = MODES
    topk: tuple[int, int] = (1, 6)
    lr: tuple[float, float] = (3e-4, 3e-3)

    def __post_init__(self) -> None:
        if not self.modes or any(m not in MODES for m in self.modes) or len(
                set(self.modes)) != len(self.modes):
            raise PartialFTError(f"search space mode {list(self.modes)!r} is not valid; use one "
                                 "or both of large, small.")
        lo, hi = self.topk
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not (
                1 <= lo <= hi):
            raise PartialFTError(f"search space topk {list(self.topk)!r} is not valid; use a "
                                 "range [low, high] of whole numbers with 1 <= low <= high.")
        lo_lr, hi_lr = self.lr
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in (lo_lr, hi_lr)) or not (0 < lo_lr <= hi_lr):
            raise PartialFTError(f"search space lr {list(self.lr)!r} is not valid; use a range "
                                 "[low, high] of positive numbers with low <= high, such as "
                                 "[3.0e-4, 3.0e-3].")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": list(self.modes), "topk": list(self.topk),
                "lr": [float(v) for v in self.lr]}

    @property
    def size(self) -> float:
        """Distinct points (inf when lr is a range)."""
        points = len(self.modes) * (self.topk[1] - self.topk[0] + 1)
        return points if self.lr[0] == self.lr[1] else math.inf

    def check_layers(self, group_sizes: dict[str, int]) -> None:
        """Top-k can reach at most the smallest homogeneous group's size."""
        smallest = min(group_sizes.values())
        if self.topk[1] > smallest:
            raise PartialFTError(f"search space topk {list(self.topk)!r} goes past the "
                                 f"{smallest} layers of the smallest homogeneous group; use a "
                                 f"high of at most {smallest}.")

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One point, drawn by an Optuna trial (fixed values are recorded as such)."""
        mode = (self.modes[0] if len(self.modes) == 1
                else trial.suggest_categorical("mode", list(self.modes)))
        topk = (self.topk[0] if self.topk[0] == self.topk[1]
                else trial.suggest_int("topk", *self.topk))
        lr = (self.lr[0] if self.lr[0] == self.lr[1]
              else trial.suggest_float("lr", *self.lr, log=True))
        return {"mode": mode, "topk": int(topk), "lr": float(lr)}


def _range(key: str, value: Any, kind: type) -> tuple[Any, Any]:
    if isinstance(value, kind) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return value[0], value[1]
    raise PartialFTError(f"search space {key} {value!r} is not valid; use one "
                         f"{'whole number' if kind is int else 'number'} or a [low, high] pair.")


def space_from_dict(data: Any, source: str = "the search space") -> SearchSpace:
    """A space from the mapping ``data`` (a YAML file's contents: ``modes``, ``topk``, ``lr``);
    unknown keys and an empty one are refused, with ``source`` (what ``data`` came from) named
    in the error."""
    if not isinstance(data, dict) or not data:
        raise PartialFTError(f"{source} is empty; give at least one of {', '.join(KEYS)}, such "
                             "as 'topk: [1, 6]'.")
    unknown = sorted(str(k) for k in data if k not in KEYS)
    if unknown:
        raise PartialFTError(f"{source} has unknown key {unknown[0]!r}; use {', '.join(KEYS)}.")
    kw: dict[str, Any] = {}
    if "mode" in data:
        modes = data["mode"]
        kw["modes"] = tuple([modes] if isinstance(modes, str) else modes or ())
    if "topk" in data:
        kw["topk"] = _range("topk", data["topk"], int)
    if "lr" in data:
        lo, hi = _range("lr", data["lr"], float)
        kw["lr"] = (float(lo) if isinstance(lo, int) else lo, float(hi) if isinstance(hi, int)
                    else hi)
    return SearchSpace(**kw)


def load_space(path: str | Path) -> SearchSpace:
    """A space from the YAML file at ``path`` (``yaml.safe_load``; keys as
    :func:`space_from_dict` takes them)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PartialFTError(f"search space {path} cannot be read as YAML ({type(exc).__name__})"
                             "; give a YAML file with keys mode, topk, lr.") from None
    return space_from_dict(data, f"search space {path}")


def space_from_flags(modes: str | None, topk: str | None, lr: str | None) -> SearchSpace:
    """A space from ``--search-modes large,small``, ``--search-topk 1-6``,
    ``--search-lr 3e-4:3e-3`` (each left out keeps the default)."""
    data: dict[str, Any] = {}
    if modes is not None:
        data["mode"] = [m.strip() for m in modes.split(",") if m.strip()]
    if topk is not None:
        data["topk"] = _parse_pair("topk", topk, "-", int)
    if lr is not None:
        data["lr"] = _parse_pair("lr", lr, ":", float)
    return space_from_dict(data) if data else SearchSpace()


def _parse_pair(name: str, text: str, sep: str, kind: type) -> list[Any]:
    """``name`` is the keyword of :func:`space_from_flags`; the CLI's flag is --search-NAME."""
    try:
        parts = [kind(p) for p in text.split(sep)]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        example = "1-6" if kind is int else "3e-4:3e-3"
        bad = f"{text!r} is not valid; use LOW{sep}HIGH such as {example}."
        raise PartialFTError(f"{name} {bad}", cli=f"--search-{name} {bad}")
    return parts * (3 - len(parts)) if len(parts) == 1 else parts
