"""``TrainConfig`` as command-line flags: one flag per field, plus timm ``train.py``'s spellings
of the same settings as aliases (``--smoothing`` for ``--label-smoothing``, ...), so a timm
user's command line mostly works as it is."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from partialft.training.config import FIELDS, TrainConfig

# field -> timm train.py flags for the same setting
ALIASES = {"label_smoothing": ("--smoothing",), "grad_clip": ("--clip-grad",),
           "random_erasing": ("--reprob",), "randaugment": ("--aa",),
           "ema": ("--model-ema-decay",), "grad_accum": ("--grad-accum-steps",)}


def _arg_type(tp: Any) -> tuple[Any, bool]:
    """The argparse type for a field's annotation, and whether None is allowed."""
    args = typing.get_args(tp)
    optional = type(None) in args
    inner = [a for a in args if a is not type(None)][0] if args and (
        typing.get_origin(tp) in (typing.Union, types.UnionType)) else tp
    if typing.get_origin(inner) in (list, dict):
        return str, optional
    return inner, optional


def _parse(kind: Any, optional: bool, name: str) -> Any:
    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null", ""):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} {text!r} is not a valid {kind.__name__}") from None

    return parse


def add_config_args(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field; flags not given stay absent (argparse.SUPPRESS)."""
    hints = typing.get_type_hints(TrainConfig)
    for name, f in FIELDS.items():
        if name in skip or name == "baseline":
            continue
        flag = "--" + name.replace("_", "-")
        kind, optional = _arg_type(hints[name])
        help_text = f.metadata["help"]
        if "default" not in help_text:  # each default said once
            help_text += f" (default: {f.default})"
        flags = (flag, *ALIASES.get(name, ()))
        if kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(*flags, dest=name, type=_parse(kind, optional, flag),
                                default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in FIELDS}


# settings only one method reads: given as a flag with another method, they are a mistake
METHOD_FLAGS = {"topk": "fapft", "angles": "fapft", "mode": "fapft", "pilot_fraction": "fapft"}


def check_method_flags(given: dict[str, Any], method: str) -> None:
    """Refuse a flag the method ignores (``--topk`` with ``attn``); a config file may hold
    them (the paper configs carry fapft's top-k for every method)."""
    from partialft.errors import PartialFTError

    for name, owner in METHOD_FLAGS.items():
        if name in given and given[name] is not None and method != owner:
            # CLI-only: only `partialft train` calls this, with the flags argparse parsed (a
            # library caller's settings are never refused here), so the message names flags
            flag = "--" + name.replace("_", "-")
            raise PartialFTError(f"{flag} {given[name]} is only used by --method {owner}, not "
                                 f"{method}; drop it or use --method {owner}.")
