"""Helpers every PEFT baseline shares: option checking, own-parameter names, hook removal."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from partialft.errors import PartialFTError, option_error, suggest


@dataclass(frozen=True)
class Option:
    """One numeric baseline option: its default and the valid range ``[low, high)``."""

    default: int | float
    low: float
    high: float = math.inf
    help: str = ""
    low_open: bool = False  # the range is (low, high) instead

    def describe(self) -> str:
        kind = "a whole number" if isinstance(self.default, int) else "a number"
        upper = "" if math.isinf(self.high) else f" and < {self.high:g}"
        return f"{kind} {'>' if self.low_open else '>='} {self.low:g}{upper}"

    def accepts(self, number: float) -> bool:
        above = number > self.low if self.low_open else number >= self.low
        return above and number < self.high


def resolve_options(method: str, options: Mapping[str, Any], spec: Mapping[str, Option]
                    ) -> dict[str, int | float]:
    """The options of ``method`` with defaults filled in; unknown names or bad values raise."""
    unknown = [k for k in options if k not in spec]
    if unknown:
        valid = ", ".join(spec) or "none"
        raise PartialFTError(f"unknown option {unknown[0]!r} for {method}"
                             f"{suggest(unknown[0], spec)}; valid options: {valid}.")
    resolved = {name: opt.default for name, opt in spec.items()}
    for name, value in options.items():
        resolved[name] = _coerce(method, name, value, spec[name])
    return resolved


def _coerce(method: str, name: str, value: Any, opt: Option) -> int | float:
    """``value`` as the option's type (ints stay whole), checked against its range."""
    want_int = isinstance(opt.default, int)
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if want_int and not number.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or not opt.accepts(number):
        shown = str(value).replace("`", "'").replace("|", "/")
        raise option_error(f"{method} option `{name}={shown}` is invalid; it must be "
                           f"{opt.describe()}.")
    return int(number) if want_int else number


def is_own(name: str, prefix: str) -> bool:
    """Whether parameter ``name`` belongs to a baseline: one dotted part starts with ``prefix``."""
    return any(part.startswith(prefix) for part in name.split("."))


def own_names(model: nn.Module, prefix: str) -> list[str]:
    return [name for name, _ in model.named_parameters() if is_own(name, prefix)]


def check_fresh(model: nn.Module, prefix: str, method: str) -> None:
    """Refuse to insert a baseline twice into the same model."""
    if own_names(model, prefix):
        raise PartialFTError(f"the model already holds {prefix}* parameters; apply {method} "
                             "to a fresh base model.")


def param_like(ref: torch.Tensor, shape: tuple[int, ...], fill: float | None = None
               ) -> nn.Parameter:
    """A new parameter on ``ref``'s device and dtype, filled with ``fill`` (or uninitialised)."""
    data = torch.empty(shape, device=ref.device, dtype=ref.dtype)
    if fill is not None:
        data.fill_(fill)
    return nn.Parameter(data)


def hook_function(hook: Callable) -> Callable:
    """The function behind a hook (unwrapping ``functools.partial``)."""
    return hook.func if isinstance(hook, functools.partial) else hook


def remove_hooks(module: nn.Module, fn: Callable) -> int:
    """Remove forward (pre-)hooks of ``module`` whose function is ``fn``; return how many."""
    removed = 0
    for hooks in (module._forward_hooks, module._forward_pre_hooks):
        for key in [k for k, h in hooks.items() if hook_function(h) is fn]:
            del hooks[key]
            removed += 1
    return removed


def channel_dim(module: nn.Module) -> int:
    """Where a module's output keeps its channels: 1 for conv/BN/GN and ``*2d`` norms, else -1."""
    first = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
    if isinstance(module, first) or type(module).__name__.endswith("2d"):
        return 1
    return -1
