"""Apply a selection to a model: only the selected layers and the head stay trainable."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from partialft.core.layermap import LayerMap
from partialft.core.select import Selection

_BN_HOOKS = "_partialft_frozen_bn_hooks"


@dataclass
class FreezeSummary:
    """Trainable and total parameters, overall and per group (plus head and non-residual)."""

    trainable_params: int
    total_params: int
    groups: dict[str, dict[str, int]]
    trainable_names: list[str] = field(repr=False)

    @property
    def fraction(self) -> float:
        return self.trainable_params / max(1, self.total_params)

    def to_dict(self) -> dict[str, Any]:
        return {"trainable_params": self.trainable_params, "total_params": self.total_params,
                "groups": self.groups}

    def __str__(self) -> str:
        """As PEFT's ``print_trainable_parameters()``, then one line per group."""
        lines = [f"trainable params: {self.trainable_params:,} || all params: "
                 f"{self.total_params:,} || trainable%: {100 * self.fraction:.4f}"]
        width = max((len(g) for g in self.groups), default=0)
        lines += [f"  {g:<{width}}  {c['trainable']:>12,} / {c['total']:,}"
                  for g, c in self.groups.items()]
        return "\n".join(lines)

    def print_trainable_parameters(self) -> None:
        """Print :meth:`__str__` (the name PEFT users know)."""
        print(self)


def trainable_names(layer_map: LayerMap, selection: Selection, train_non_residual: bool = False,
                    extra: Iterable[str] = ()) -> set[str]:
    """Names of the parameters a selection trains (without touching any model)."""
    if selection.train_all:
        return set(layer_map.param_numel)
    by_id = layer_map.by_id()
    names = set(layer_map.head_params) | set(extra)
    for layer_id in selection.layers:
        names |= set(by_id[layer_id].param_names)
    if train_non_residual:
        names |= set(layer_map.non_residual_params())
    return names


def summarize(layer_map: LayerMap, names: set[str], added: Iterable[str] = ()) -> FreezeSummary:
    """Count trainable parameters per homogeneous group, the head, non-residual modules and the
    ``added`` ones (a PEFT baseline's own modules)."""
    added = [n for n in added if n in layer_map.param_numel]
    groups: dict[str, dict[str, int]] = {}
    parts = {g: [n for la in ls for n in la.param_names] for g, ls in layer_map.groups().items()}
    parts["head"] = list(layer_map.head_params)
    parts["non_residual"] = [n for n in layer_map.non_residual_params() if n not in set(added)]
    parts["added"] = added
    for group, members in parts.items():
        if members:
            groups[group] = {"trainable": layer_map.count(n for n in members if n in names),
                             "total": layer_map.count(members)}
    trainable = layer_map.count(n for n in layer_map.param_numel if n in names)
    return FreezeSummary(trainable, layer_map.total_params, groups, sorted(names))


def apply_selection(model: nn.Module, layer_map: LayerMap, selection: Selection,
                    train_non_residual: bool = False, extra: Iterable[str] = ()
                    ) -> FreezeSummary:
    """Set ``requires_grad`` on ``model`` so that only the selection (and the head) trains.

    ``layer_map`` is the model's layers (:func:`find_layers`), ``selection`` the layer ids to
    train (:func:`select_layers`). Non-residual modules stay frozen unless
    ``train_non_residual``; ``extra`` names more parameters to train (a PEFT baseline's own).
    BatchNorm layers whose parameters are all frozen run in eval mode even under
    ``model.train()``, so their running stats do not move. Returns the counts per group.
    """
    names = trainable_names(layer_map, selection, train_non_residual, extra)
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    _freeze_batchnorm_stats(model, names)
    return summarize(layer_map, names, added=extra)


def delta_names(model: nn.Module) -> list[str]:
    """Trainable parameters plus the persistent buffers of modules that train (BatchNorm stats)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    keys = set(model.state_dict())
    for mod_name, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            prefix = f"{mod_name}." if mod_name else ""
            names += [prefix + b for b, _ in module.named_buffers(recurse=False)
                      if prefix + b in keys]
    return names


def _keep_eval(module: nn.Module, _args: Any) -> None:
    module.train(False)


def _bn_is_frozen(name: str, module: nn.Module, trainable: set[str]) -> bool:
    """Frozen when its affine parameters are; without any, when nothing beside it trains."""
    own = [f"{name}.{n}" for n, _ in module.named_parameters()]
    if own:
        return not any(n in trainable for n in own)
    parent = name.rpartition(".")[0]
    return not any(n.startswith(f"{parent}.") or not parent for n in trainable)


def _freeze_batchnorm_stats(model: nn.Module, trainable: set[str]) -> None:
    """Keep frozen BatchNorm layers in eval mode (a forward pre-hook), so running stats stay."""
    for handle in getattr(model, _BN_HOOKS, []):
        handle.remove()
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if _bn_is_frozen(name, module, trainable):
                handles.append(module.register_forward_pre_hook(_keep_eval))
    object.__setattr__(model, _BN_HOOKS, handles)
