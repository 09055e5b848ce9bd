"""How a setting's raw value is read and type-checked: a flag's string or a YAML value turned
into the config's type (``0.5,0.5,0.5``, ``key=value`` pairs), and the words an error uses for
the types an annotation allows. :class:`~partialft.training.config.TrainConfig` applies them."""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from partialft.errors import PartialFTError, suggest
from partialft.utils.parse import load_yaml

WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
         list: "a list", dict: "a mapping"}


def floats(name: str, value: Any) -> Any:
    """'0.5,0.5,0.5' (a flag) or [0.5, 0.5, 0.5] (YAML) -> [0.5, 0.5, 0.5]; other values are
    left for the type check to name."""
    if isinstance(value, str):
        try:
            value = [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise PartialFTError(f"{name} {value!r} is not valid; use comma-separated numbers "
                                 "such as 0.5,0.5,0.5.") from None
    if isinstance(value, list):
        if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                and math.isfinite(v) for v in value):
            raise PartialFTError(f"{name} {value!r} is not valid; use finite numbers, one per "
                                 "channel (or one for all).")
        if name == "std" and not all(v > 0 for v in value):
            raise PartialFTError(f"std {value!r} is not valid; every value must be above 0.")
        value = [float(v) for v in value]
    return value


def keyword_values(name: str, text: str) -> dict[str, Any]:
    """'drop_rate=0.1,global_pool=avg' (a flag) -> {'drop_rate': 0.1, 'global_pool': 'avg'}."""
    out: dict[str, Any] = {}
    for part in (p.strip() for p in text.replace(" ", ",").split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.isidentifier():
            raise PartialFTError(f"{name} {text!r} is not valid; use key=value pairs separated "
                                 "by commas, such as drop_rate=0.1,global_pool=avg.")
        # numbers, true/false, strings; aliases and deep nesting refused (utils.parse)
        out[key] = load_yaml(value, f"{name} {key}") if value else None
    return out


def check_optimizer(name: str) -> None:
    from timm.optim import list_optimizers

    valid = list_optimizers()
    if name not in valid:
        raise PartialFTError(f"opt {name!r} is not valid{suggest(name, valid)}; use one of "
                             "timm's optimizers, such as adamw, sgd or lamb.")


def whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def optional(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def kinds(tp: Any) -> list[type]:
    """The plain types an annotation allows: ``list[str] | None`` -> [list]."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    parts = typing.get_args(tp) if union else (tp,)
    return [typing.get_origin(a) or a for a in parts if a is not type(None)]


def is_kind(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def describe(kinds: list[type]) -> str:
    return " or ".join(WORDS.get(k, k.__name__) for k in kinds)
