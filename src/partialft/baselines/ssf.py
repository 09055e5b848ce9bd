"""SSF baseline (Lian et al. 2022): scale and shift the output of every operation.

Every Linear, Conv2d, LayerNorm (also timm's ``LayerNorm2d``), BatchNorm and GroupNorm with a
weight, except the classifier head, gets ``ssf_scale`` (ones) and ``ssf_shift`` (zeros) of its
output width, applied by a forward hook along the channel dimension: ``y = y * scale + shift``.
So the initial model equals the base model, and :func:`merge_ssf` folds both into the module's
own weight and bias (zero inference overhead). On a ViT this is the SSF paper's placement:
patch embedding, ``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``
and the final norm.

ViT-B/16, 100 classes: per block ``2 * (768 + 2304 + 768 + 768 + 3072 + 768) = 16,896``, times 12
= 202,752, + patch embedding 1,536 + final norm 1,536 + head 76,900 = 282,724 (0.28 M).
Parameters live on the module they modulate (``blocks.0.attn.qkv.ssf_scale``), so all original
names survive.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn

from partialft.baselines._common import (
    channel_dim,
    check_fresh,
    own_names,
    param_like,
    remove_hooks,
    resolve_options,
)
from partialft.core.layermap import LayerMap
from partialft.errors import PartialFTError

PREFIX = "ssf_"
OPTIONS: dict = {}
TARGETS = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


def _scale_shift(module: nn.Module, args: Any, output: torch.Tensor, *, dim: int
                 ) -> torch.Tensor:
    """Forward hook: ``output * ssf_scale + ssf_shift`` along channel dimension ``dim``."""
    shape = [1] * output.dim()
    shape[dim] = -1
    return output * module.ssf_scale.view(shape) + module.ssf_shift.view(shape)


def ssf_targets(model: nn.Module, head_params: tuple[str, ...]) -> dict[str, nn.Module]:
    """Every module SSF modulates: the TARGETS types that own a weight, outside the head."""
    head = set(head_params)
    found = {}
    for path, module in model.named_modules():
        if not isinstance(module, TARGETS) or getattr(module, "weight", None) is None:
            continue
        if f"{path}.weight" in head:
            continue
        found[path] = module
    return found


class SSF:
    """Scale and shift after every operation; train only those and the head."""

    name = "ssf"
    prefix = PREFIX
    keeps_names = True
    options = OPTIONS

    def apply(self, model: nn.Module, layer_map: LayerMap, **options: Any
              ) -> tuple[nn.Module, list[str]]:
        resolve_options(self.name, options, OPTIONS)
        check_fresh(model, PREFIX, self.name)
        targets = ssf_targets(model, layer_map.head_params)
        if not targets:
            raise PartialFTError(f"ssf found no Linear, Conv2d or norm layer outside the head of "
                                 f"{type(model).__name__}; it cannot be applied to this model.")
        for module in targets.values():
            width = module.weight.shape[0]
            module.ssf_scale = param_like(module.weight, (width,), 1.0)
            module.ssf_shift = param_like(module.weight, (width,), 0.0)
            module.register_forward_hook(functools.partial(_scale_shift, dim=channel_dim(module)))
        return model, own_names(model, PREFIX)


@torch.no_grad()
def _fold(module: nn.Module) -> None:
    """weight <- weight * scale (per output channel); bias <- bias * scale + shift."""
    scale, shift = module.ssf_scale, module.ssf_shift
    weight = module.weight
    weight.mul_(scale.view(-1, *[1] * (weight.dim() - 1)).to(weight.dtype))
    if module.bias is None:  # a bias-free layer gains a bias holding the shift
        module.bias = nn.Parameter(shift.detach().clone().to(weight.dtype),
                                   requires_grad=weight.requires_grad)
    else:
        module.bias.mul_(scale.to(weight.dtype)).add_(shift.to(weight.dtype))


def merge_ssf(model: nn.Module) -> nn.Module:
    """Fold every scale and shift into the preceding weights and remove them, in place.

    Outputs are unchanged (to float rounding); the model's names and structure become the base
    model's again, except that bias-free layers (e.g. Swin's patch-merging reduction) gain a bias.
    """
    for module in model.modules():
        if remove_hooks(module, _scale_shift):
            _fold(module)
            del module.ssf_scale, module.ssf_shift
    return model


SSF_BASELINE = SSF()
