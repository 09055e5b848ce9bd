"""One entry point that turns (model, method, options) into a partially trainable model.

Layer methods (full, linear, attn, ..., layers, fapft) freeze by selection; PEFT baselines
(:mod:`partialft.baselines`) first insert their own modules, then train only those and the head.
Every option has one name: the keyword here, the key of a YAML config and the CLI flag
(``rank=4``, ``rank: 4``, ``--rank 4``); :func:`method_options` lists them per method.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from partialft.core.freeze import FreezeSummary, apply_selection, delta_names
from partialft.core.layers import LayerMap, find_layers
from partialft.core.select import (
    METHODS,
    SELECT_OPTIONS,
    Selection,
    check_option_names,
    select_layers,
)
from partialft.errors import PartialFTError, suggest
from partialft.utils.digest import frozen_sha256, weights_sha256

# the attribute get_partial_model leaves on the model: what was applied (save_trained reads it)
CONFIG_ATTR = "partialft_config"


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
    """Every method name ``prepare`` and ``get_partial_model`` accept: the layer methods
    (``full``, ``linear``, ``attn``, ``ffn``, the ``*-half-*`` strategies, ``layers``,
    ``fapft``), then the PEFT baselines (``adapter``, ``vpt-deep``, ``ssf``, ``lora``)."""
    from partialft.baselines import BASELINES

    return list(METHODS) + list(BASELINES)


def method_options(method: str) -> dict[str, str]:
    """The options ``method`` takes, name -> one line saying what it is and its default.

    The names are the keywords of :func:`prepare` and :func:`get_partial_model`, the keys of a
    training config and (with dashes) the flags of ``partialft train`` and ``plan``;
    ``partialft methods`` prints them. ``layer_spec`` and ``train_non_residual`` apply to
    every method and are not listed.
    """
    from partialft.baselines import BASELINES

    _check_method(method)
    if method in METHODS:
        return dict(SELECT_OPTIONS.get(method, {}))
    out = {name: f"{opt.help} (default {opt.default})"
           for name, opt in BASELINES[method].options.items()}  # type: ignore[attr-defined]
    if method == "lora":
        from partialft.baselines.lora import TARGETS

        out["targets"] = (f"modules to adapt: a list or comma-separated subset of "
                          f"{','.join(TARGETS)} (default: all four)")
    return out


def _check_method(method: str) -> None:
    valid = all_methods()
    if method not in valid:
        raise PartialFTError(f"unknown method {method!r}{suggest(method, valid)}; valid "
                             f"methods: {', '.join(valid)}.")


def check_method_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options given (None = not given) if ``method`` takes every one and a baseline's are
    in range; else one :class:`PartialFTError` naming the option, the valid ones and a close
    name (worded with keywords for the library, flags for the CLI)."""
    from partialft.baselines import BASELINES, check_options

    _check_method(method)
    given = {k: v for k, v in options.items() if v is not None}
    check_option_names(method, given, method_options(method))
    if method in BASELINES:
        check_options(method, given)
    return given


def prepare(model: nn.Module, method: str, *, layer_spec: str | Path | dict | None = None,
            train_non_residual: bool = False, baseline_options: dict[str, Any] | None = None,
            **options: Any) -> Prepared:
    """Find layers, select, insert PEFT modules if ``method`` is a baseline, and freeze.

    Returns a :class:`Prepared` (model, layer map, selection, summary); the model is changed in
    place. Use :func:`get_partial_model` for the model alone, PEFT style.

    Args:
        model: a timm model (or one a ``layer_spec`` describes).
        method: one of :func:`all_methods`.
        layer_spec: a layer spec (path or mapping) for models partialft does not know.
        train_non_residual: also train patch embedding, tokens, downsampling and final norm.
        baseline_options: the options of a PEFT baseline as a mapping (older spelling of
            passing them as keywords; both may be given).
        **options: the method's options, one name each (:func:`method_options`; an option the
            method does not take raises :class:`PartialFTError`):

            - ``layers``: method ``layers``: the layer ids to train.
            - ``angles``, ``topk``, ``mode``: method ``fapft``: angles (layer id -> degrees),
              layers per group (one number or one per stage; default paper Table 7),
              ``"large"`` or ``"small"``.
            - ``rank`` (8), ``alpha`` (16.0), ``dropout`` (0.0), ``targets`` (all of qkv,
              attn.proj, mlp.fc1, mlp.fc2): method ``lora``.
            - ``reduction`` (64), ``dim`` (0 = channels // reduction): method ``adapter``.
            - ``tokens`` (50), ``dropout`` (0.0): method ``vpt-deep``.
            - method ``ssf`` and the other layer methods take none.
    """
    from partialft.baselines import BASELINES

    options = check_method_options(method, {**(baseline_options or {}), **options})
    layer_map = find_layers(model, layer_spec)
    if method in METHODS:
        selection = select_layers(layer_map, method, **options)
        summary = apply_selection(model, layer_map, selection, train_non_residual)
        return Prepared(model, layer_map, selection, summary)
    baseline = BASELINES[method]
    model, own = baseline.apply(model, layer_map, **options)
    own = list(own)
    new_map = find_layers(model, layer_spec, ignore=set(own)) if baseline.keeps_names \
        else layer_map
    # record resolved options, so a rebuild is right even if a default changes later
    resolved = {k: o.default for k, o in getattr(baseline, "options", {}).items()}
    selection = Selection(method, options={**resolved, **options})
    new_map = _with_all_params(new_map, model)
    summary = apply_selection(model, new_map, selection, train_non_residual, extra=own)
    return Prepared(model, new_map, selection, summary)


def _with_all_params(layer_map: LayerMap, model: nn.Module) -> LayerMap:
    """The layer map with the parameter sizes of ``model`` (which may have gained modules)."""
    numel = {name: p.numel() for name, p in model.named_parameters()}
    return LayerMap(layer_map.family, layer_map.layers, layer_map.head_params, numel)


def get_partial_model(model: nn.Module, method: str, *,
                      layer_spec: str | Path | dict | None = None,
                      train_non_residual: bool = False, **options: Any) -> nn.Module:
    """``model`` itself, made partially trainable in place (PEFT's ``get_peft_model`` habit).

    Freezes every parameter except the method's layers and the head, inserting a PEFT
    baseline's modules first; the model remembers what was applied (its ``partialft_config``
    attribute, with the SHA-256 of the base weights), so :func:`partialft.save_trained` can
    save only the trained tensors and :func:`partialft.load_trained` rebuild it.

    Args:
        model: a fresh timm model with its base weights (not already partial).
        method: one of :func:`all_methods`.
        layer_spec: a layer spec (path or mapping) for models partialft does not know.
        train_non_residual: also train patch embedding, tokens, downsampling and final norm.
        **options: the method's options, as for :func:`prepare` (``rank=4``, ``tokens=10``,
            ``layers=[...]``, ``angles=..., topk=2, mode="large"``); an option the method does
            not take raises :class:`PartialFTError`.
    """
    if hasattr(model, CONFIG_ATTR):
        raise PartialFTError(f"the model is already partial (method "
                             f"{getattr(model, CONFIG_ATTR)['method']!r}); apply a method to a "
                             "fresh base model.")
    base_state = dict(model.state_dict())  # before any module is inserted
    prepared = prepare(model, method, layer_spec=layer_spec,
                       train_non_residual=train_non_residual, **options)
    frozen = frozen_sha256(base_state, delta_names(prepared.model))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classes = getattr(model, "num_classes", None)
    base = {"model": cfg.get("architecture") or type(model).__name__,
            "num_classes": classes if isinstance(classes, int) and classes > 0 else None,
            "weights_sha256": weights_sha256(base_state), "frozen_sha256": frozen}
    selection = {**prepared.selection.to_dict(), "train_non_residual": train_non_residual}
    return remember(prepared.model, method, selection, layer_spec, base)


def remember(model: nn.Module, method: str, selection: dict[str, Any],
             layer_spec: str | Path | dict | None, base: dict[str, Any]) -> nn.Module:
    """Record on ``model`` what made it partial (read by :func:`partialft.save_trained`)."""
    setattr(model, CONFIG_ATTR, {"method": method, "selection": selection,
                                 "layer_spec": layer_spec, "base": base})
    return model


def print_trainable_parameters(model: nn.Module) -> None:
    """Print PEFT's line for ``model``: ``trainable params: 5,770 || all params: 5,530,890 ||
    trainable%: 0.1043`` (parameters with ``requires_grad`` against all of them)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"trainable params: {trainable:,} || all params: {total:,} || "
          f"trainable%: {100 * trainable / max(1, total):.4f}")
