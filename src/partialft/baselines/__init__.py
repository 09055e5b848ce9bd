"""PEFT baselines (Adapter, VPT-Deep, SSF, LoRA): one module each, a fixed parameter prefix.

Each baseline is an object with ``apply(model, layer_map, **options) -> (model, names)``: it
inserts its modules into ``model`` and returns the model and the names of its own parameters,
which are the only ones (with the head) that train. ``keeps_names`` says whether the original
parameter names survive (so layers can be found again on the returned model).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch.nn as nn

from partialft.core.layermap import LayerMap


class Baseline(Protocol):
    prefix: str
    keeps_names: bool

    def apply(self, model: nn.Module, layer_map: LayerMap, **options: Any
              ) -> tuple[nn.Module, list[str]]: ...


BASELINES: dict[str, Baseline] = {}


def _register() -> None:
    """Register the four baselines (imported here, after Baseline and BASELINES exist)."""
    from partialft.baselines.adapter import ADAPTER
    from partialft.baselines.lora import LORA
    from partialft.baselines.ssf import SSF_BASELINE
    from partialft.baselines.vpt import VPT_DEEP

    for baseline in (ADAPTER, VPT_DEEP, SSF_BASELINE, LORA):
        BASELINES[baseline.name] = baseline


_register()


def check_options(method: str, options: dict[str, Any]) -> None:
    """Check a baseline's options (names and ranges) without a model: the one rule
    ``partialft train``, ``plan`` and a config's ``baseline:`` mapping share."""
    from partialft.baselines._common import resolve_options
    from partialft.baselines.lora import TARGETS, target_regex

    options = dict(options)
    if method == "lora":
        target_regex(options.pop("targets", TARGETS))
    resolve_options(method, options, BASELINES[method].options)  # type: ignore[attr-defined]
