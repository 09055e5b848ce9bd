"""Save and load only what was trained, from one's own loop: the run dir's delta format.

:func:`save_trained` writes ``DIR/delta.safetensors``, exactly what ``partialft train`` writes
into a run dir: the trained tensors (selected layers or a PEFT baseline's modules, the head, the
running statistics of trained BatchNorm layers) and metadata naming the base model (name,
classes, SHA-256 of its weights) and the selection (method, options, layer ids). So
:func:`load_trained` reads both a folder :func:`save_trained` wrote and a finished run dir.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch.nn as nn

from partialft.errors import PartialFTError, option_error
from partialft.methods import CONFIG_ATTR, get_partial_model, remember
from partialft.training.checkpoints import (
    DELTA,
    SUMMARY,
    apply_delta,
    delta_names,
    read_metadata,
    save_delta,
)
from partialft.training.runs import (
    NOT_OPTIONS,
    base_model as rebuild_base,
    check_base_weights,
    check_selected,
    delta_info,
    legacy_options,
)
from partialft.utils.digest import frozen_sha256


def partial_module(model: nn.Module) -> nn.Module:
    """``model`` or the first submodule :func:`partialft.get_partial_model` made (a wrapper
    such as a Trainer's loss module may hold it)."""
    for module in model.modules():
        if hasattr(module, CONFIG_ATTR):
            return module
    raise PartialFTError(f"the {type(model).__name__} was not made partial by partialft, so it "
                         "does not know what it trains; call partialft.get_partial_model(model, "
                         "method) before training it.")


def save_trained(model: nn.Module, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write only the trained tensors of ``model`` to ``directory/delta.safetensors``.

    Args:
        model: a model :func:`partialft.get_partial_model` or :func:`load_trained` returned
            (or a module holding one, such as a Trainer's wrapper).
        directory: the folder to write into (created if missing); other files in it are kept.
        overwrite: replace a ``delta.safetensors`` that partialft wrote there before (a file
            of any other kind is never replaced).

    Returns the path written. The metadata holds what :func:`load_trained` needs: method,
    options, selected layer ids, ``train_non_residual``, base model name, classes and the
    SHA-256 of the base weights.
    """
    inner = partial_module(model)
    cfg = getattr(inner, CONFIG_ATTR)
    directory = Path(directory)
    if (directory / SUMMARY).is_file():
        raise PartialFTError(f"{directory} is a partialft run dir; save into another folder.")
    path = directory / DELTA
    if path.exists():
        _check_replace(path, overwrite)
    directory.mkdir(parents=True, exist_ok=True)
    base = dict(cfg["base"])
    if isinstance(cfg.get("layer_spec"), (str, Path)):
        base["layer_spec"] = str(Path(cfg["layer_spec"]).resolve())
    return save_delta(path, inner, base, cfg["selection"], delta_names(inner))


def _check_replace(path: Path, overwrite: bool) -> None:
    if not overwrite:
        raise option_error(f"{path} already exists; pass `overwrite=True` to replace it, or "
                           "save into another folder.")
    try:
        own = read_metadata(path).get("format") == "partialft-delta"
    except PartialFTError:
        own = False
    if not own or not path.is_file():
        raise PartialFTError(f"{path} is not a delta partialft wrote, so it is not replaced; "
                             "move it away or save into another folder.")


def load_trained(base_model: nn.Module | None, directory: str | Path, *,
                 allow_base_mismatch: bool = False,
                 layer_spec: str | Path | dict | None = None) -> nn.Module:
    """Rebuild the partial model saved in ``directory`` on ``base_model`` and load its tensors.

    Args:
        base_model: a fresh model with the base weights the tensors were trained from (checked
            against the recorded SHA-256), or None to build the recorded base (timm name,
            classes, pretrained weights or checkpoint) as ``partialft eval`` does.
        directory: a folder :func:`save_trained` wrote, or a finished ``partialft train`` run
            dir.
        allow_base_mismatch: load onto base weights other than the recorded ones (with a
            warning) instead of refusing.
        layer_spec: the layer spec the model was made with, when it was a mapping (a path is
            recorded).

    Returns the model, frozen as it was trained and holding the trained tensors: its outputs
    equal the saved model's bit for bit; :func:`save_trained` works on it again.
    """
    meta = delta_info(directory)
    base, selection = meta["base"], meta.get("selection") or {}
    if base_model is None:
        base_model = rebuild_base(base, allow_base_mismatch=allow_base_mismatch)
    if hasattr(base_model, CONFIG_ATTR):
        raise PartialFTError("base_model is already partial; pass a fresh model with the base "
                             "weights (or None to build the recorded base).")
    delta = _load_delta(Path(directory) / DELTA)
    base_state = dict(base_model.state_dict())
    if base.get("frozen_sha256"):  # the tensors base + delta depends on (not a new head)
        _check_frozen(base_state, delta, base, allow_base_mismatch)
    else:  # older runs recorded the whole base only
        check_base_weights(base_model, base, allow_base_mismatch)
    spec = layer_spec if layer_spec is not None else base.get("layer_spec")
    model = _rebuild(base_model, base, selection, spec, _non_residual(directory, selection))
    check_selected(model, delta, meta, Path(directory) / DELTA)
    apply_delta(model, delta)
    return model


def _check_frozen(state: dict[str, Any], delta: dict[str, Any], base: dict[str, Any],
                  allow: bool) -> None:
    """Refuse a base whose frozen tensors differ from those the delta was trained on."""
    now = frozen_sha256(state, delta)
    if now == base["frozen_sha256"]:
        return
    what = (f"base_model's frozen weights differ from those the delta was trained on (SHA-256 "
            f"{base['frozen_sha256'][:12]}... recorded, {now[:12]}... now)")
    if allow:
        print(f"warning: {what}; the delta is applied to them anyway (allow_base_mismatch=True).",
              file=sys.stderr)
        return
    raise option_error(f"{what}, so base + delta is not the trained model; pass the base model "
                       "it was trained from, or `allow_base_mismatch=True` to apply it anyway.")


def _load_delta(path: Path) -> dict[str, Any]:
    from partialft.models import load_state_dict_file

    return load_state_dict_file(path)


def _non_residual(directory: str | Path, selection: dict[str, Any]) -> bool:
    """Whether the non-residual modules trained: recorded in the selection (runs before that
    record it only in config.yaml)."""
    if "train_non_residual" in selection:
        return bool(selection["train_non_residual"])
    from partialft.training.runs import CONFIG, read_config

    if (Path(directory) / CONFIG).is_file():
        return bool(read_config(directory).get("train_non_residual"))
    return False


def _rebuild(model: nn.Module, base: dict[str, Any], selection: dict[str, Any],
             layer_spec: Any, train_non_residual: bool) -> nn.Module:
    """The model made partial as recorded: a baseline with its options, a layer method with
    its recorded layer ids (no angles needed)."""
    from partialft.baselines import BASELINES
    from partialft.core.freeze import apply_selection
    from partialft.core.layers import find_layers
    from partialft.core.select import METHODS, Selection

    method = selection.get("method")
    if method in BASELINES:
        options = legacy_options({k: v for k, v in selection.items() if k not in NOT_OPTIONS})
        model = get_partial_model(model, method, layer_spec=layer_spec,
                                  train_non_residual=train_non_residual, **options)
        setattr(model, CONFIG_ATTR, {**getattr(model, CONFIG_ATTR), "base": base})
        return model
    if method not in METHODS:
        raise PartialFTError(f"the delta's method {method!r} cannot be rebuilt; load_trained "
                             "reads deltas of partialft's methods and baselines.")
    layer_map = find_layers(model, layer_spec)
    known = layer_map.by_id()
    layers = tuple(selection.get("layers") or ())
    stray = [la for la in layers if la not in known]
    if stray:
        raise PartialFTError(f"the delta selects layer {stray[0]!r}, which base_model does not "
                             "have; pass the base model it was trained from.")
    options = {k: v for k, v in selection.items() if k not in NOT_OPTIONS}
    sel = Selection(method, layers, bool(selection.get("train_all")), options)
    apply_selection(model, layer_map, sel, train_non_residual)
    remember(model, method, {**sel.to_dict(), "train_non_residual": train_non_residual},
             layer_spec, base)
    return model
