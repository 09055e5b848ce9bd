"""A user's script calling partialft's public API; `tests/test_typing.py` runs mypy over it.

It is never executed: mypy must see real types for these names (not Any from the lazy
loader) and find no error, and the deliberate mistakes in `mistakes.py` must be reported.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

import partialft
from partialft import LayerMap, PartialFTError, Prepared, Selection, find_layers, select_layers
from partialft.integrations import SaveTrainedCallback
from partialft.models import create_model


def count(model: nn.Module) -> int:
    layers: LayerMap = find_layers(model)
    selection: Selection = select_layers(layers, "attn")
    return partialft.apply_selection(model, layers, selection).trainable_params


def prepared(model: nn.Module) -> Prepared:
    try:
        return partialft.prepare(model, "fapft", topk=2, mode="small")
    except PartialFTError as exc:
        raise SystemExit(str(exc)) from exc


def peft_habits(model: nn.Module, out: Path) -> nn.Module:
    partial: nn.Module = partialft.get_partial_model(model, "lora", rank=4, alpha=8.0)
    partialft.print_trainable_parameters(partial)
    written: Path = partialft.save_trained(partial, out, overwrite=True)
    options: dict[str, str] = partialft.method_options("vpt-deep")
    assert written.name and options
    return partialft.load_trained(create_model("test_vit", num_classes=10), out,
                                  allow_base_mismatch=False)


def trainer_callbacks() -> list[SaveTrainedCallback]:
    return [SaveTrainedCallback(keep_full=False)]


model = create_model("test_vit", num_classes=10)
total: int = count(model)
methods: list[str] = partialft.all_methods()
version: str = partialft.__version__
