"""One entry point that turns (model, method, options) into a partially trainable model.

Layer methods (full, linear, attn, ..., layers, fapft) freeze by selection; PEFT baselines
(:mod:`partialft.baselines`) first insert their own modules, then train only those and the head.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from partialft.core.freeze import FreezeSummary, apply_selection
from partialft.core.layers import LayerMap, find_layers
from partialft.core.select import METHODS, Selection, select_layers
from partialft.errors import PartialFTError, suggest


@dataclass
class Prepared:
    """A model ready to train: its layers, what is selected and how many parameters train.

    Unpacks like PEFT's ``get_peft_model`` result plus a summary:
    ``model, summary = partialft.prepare(model, "attn")``; ``print(summary)``.
    """

    model: nn.Module
    layer_map: LayerMap
    selection: Selection
    summary: FreezeSummary

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.summary))


def all_methods() -> list[str]:
    from partialft.baselines import BASELINES

    return list(METHODS) + list(BASELINES)


def prepare(model: nn.Module, method: str, *, layer_spec: str | Path | dict | None = None,
            train_non_residual: bool = False, baseline_options: dict[str, Any] | None = None,
            **select_options: Any) -> Prepared:
    """Find layers, select, insert PEFT modules if ``method`` is a baseline, and freeze."""
    from partialft.baselines import BASELINES

    if method not in METHODS and method not in BASELINES:
        valid = all_methods()
        raise PartialFTError(f"unknown method {method!r}{suggest(method, valid)}; valid "
                             f"methods: {', '.join(valid)}.")
    layer_map = find_layers(model, layer_spec)
    if method in METHODS:
        selection = select_layers(layer_map, method, **select_options)
        summary = apply_selection(model, layer_map, selection, train_non_residual)
        return Prepared(model, layer_map, selection, summary)
    baseline = BASELINES[method]
    model, own = baseline.apply(model, layer_map, **(baseline_options or {}))
    own = list(own)
    new_map = find_layers(model, layer_spec, ignore=set(own)) if baseline.keeps_names \
        else layer_map
    # record resolved options, so a rebuild is right even if a default changes later
    resolved = {k: o.default for k, o in getattr(baseline, "options", {}).items()}
    selection = Selection(method, options={**resolved, **(baseline_options or {})})
    new_map = _with_all_params(new_map, model)
    summary = apply_selection(model, new_map, selection, train_non_residual, extra=own)
    return Prepared(model, new_map, selection, summary)


def _with_all_params(layer_map: LayerMap, model: nn.Module) -> LayerMap:
    """The layer map with the parameter sizes of ``model`` (which may have gained modules)."""
    numel = {name: p.numel() for name, p in model.named_parameters()}
    return LayerMap(layer_map.family, layer_map.layers, layer_map.head_params, numel)
