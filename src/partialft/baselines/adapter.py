"""Adapter baseline: a bottleneck MLP after the FFN of every block (paper Sec. 4.1, Table 1).

One sequential adapter per block, on the FFN's output before the residual add (the Pfeiffer /
AdaptFormer placement; Houlsby puts a second one after attention)::

    h = mlp(norm2(x));   h = h + up(act(down(h)));   x = x + h

``down`` is ``dim -> dim // reduction`` (kaiming-uniform, as ``nn.Linear``), ``up`` is
``dim // reduction -> dim`` and zero-initialised, so the initial model equals the base model.
One adapter per block gives the paper's counts: ViT-B/16 with 100 classes and reduction 64 has
hidden 12 and ``12 * (768*12 + 12 + 12*768 + 768) = 230,544`` adapter parameters, plus the
76,900 of the head: 307,444 (0.31 M); two per block (Houlsby) would give 0.54 M.

The adapter is a child ``adapter_ffn`` of the FFN module and runs from a forward hook, so every
original module path and parameter name survives (``blocks.3.mlp.fc1.weight`` stays).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from partialft.baselines._common import (
    Option,
    check_fresh,
    own_names,
    remove_hooks,
    resolve_options,
)
from partialft.core.layermap import LayerMap
from partialft.errors import PartialFTError

PREFIX = "adapter_"
OPTIONS = {"reduction": Option(64, 1, help="bottleneck width = channels // reduction"),
           "dim": Option(0, 0, help="bottleneck width itself (0 = channels // reduction)")}
_FFN_KINDS = ("ffn", "channel")


class Adapter(nn.Module):
    """down-projection, GELU, zero-initialised up-projection (the residual add is in the hook)."""

    def __init__(self, dim: int, hidden: int, channels_first: bool = False,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.channels_first = channels_first
        self.down = nn.Linear(dim, hidden, device=device, dtype=dtype)
        self.up = nn.Linear(hidden, dim, device=device, dtype=dtype)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:  # (B, C, H, W) -> (B, H, W, C) for the linear layers, and back
            return self.up(F.gelu(self.down(x.movedim(1, -1)))).movedim(-1, 1)
        return self.up(F.gelu(self.down(x)))


def _adapter_hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    """Forward hook on an FFN: add the adapter's output to the FFN's output."""
    return output + module.adapter_ffn(output)


def ffn_modules(model: nn.Module, layer_map: LayerMap) -> dict[str, nn.Module]:
    """The FFN module of every block: ffn/channel layers, or the ``mlp`` inside whole blocks."""
    modules = dict(model.named_modules())
    found: dict[str, nn.Module] = {}
    for layer in layer_map.layers:
        if layer.kind in _FFN_KINDS and layer.id in modules:
            found[layer.id] = modules[layer.id]
        elif layer.kind == "block" and f"{layer.id}.mlp" in modules:
            found[f"{layer.id}.mlp"] = modules[f"{layer.id}.mlp"]
    if not found:
        raise PartialFTError(f"adapter needs FFN (mlp) layers, but this {layer_map.family} model "
                             "has none; use ssf, lora or a layer method instead.")
    return found


def _last_projection(module: nn.Module) -> nn.Module:
    """The last Linear or 1x1 convolution inside an FFN: its output width is the model's."""
    projections = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not projections:
        raise PartialFTError(f"adapter found no Linear or Conv2d inside {type(module).__name__}; "
                             "it supports timm Mlp-style FFNs only.")
    return projections[-1]


class AdapterBaseline:
    """Insert one bottleneck adapter after each FFN; train only those and the head."""

    name = "adapter"
    prefix = PREFIX
    keeps_names = True
    options = OPTIONS

    def apply(self, model: nn.Module, layer_map: LayerMap, **options: Any
              ) -> tuple[nn.Module, list[str]]:
        opts = resolve_options(self.name, options, OPTIONS)
        check_fresh(model, PREFIX, self.name)
        for ffn in ffn_modules(model, layer_map).values():
            proj = _last_projection(ffn)
            dim = proj.out_features if isinstance(proj, nn.Linear) else proj.out_channels
            hidden = opts["dim"] or max(1, dim // opts["reduction"])
            ffn.adapter_ffn = Adapter(dim, hidden, isinstance(proj, nn.Conv2d),
                                      proj.weight.device, proj.weight.dtype)
            ffn.register_forward_hook(_adapter_hook)
        return model, own_names(model, PREFIX)


def remove_adapters(model: nn.Module) -> nn.Module:
    """Take every adapter out again (the base model back), in place."""
    for module in model.modules():
        if remove_hooks(module, _adapter_hook):
            del module.adapter_ffn
    return model


ADAPTER = AdapterBaseline()
