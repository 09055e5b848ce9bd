"""VPT-Deep baseline (Jia et al. 2022): learnable prompt tokens at the input of every block.

Each block ``i`` of a timm ``VisionTransformer`` gets its own ``blocks.i.vpt_prompts`` of shape
``(tokens, embed_dim)``. A forward pre-hook inserts them right after the prefix tokens (class
and register tokens, ``model.num_prefix_tokens``), a forward hook drops them from the block's
output, so every block sees ``[prefix, prompts_i, patches]`` and the rest of the model (final
norm, pooling, head) sees the usual tokens. Prompts get no position embedding (as in VPT).

ViT-B/16 with 50 prompt tokens: ``12 * 50 * 768 = 460,800`` + head 76,900 = 537,700 (0.54 M).
Prompts are initialised as in VPT: uniform in ``+-sqrt(6 / (3 * patch**2 + dim))``. Because they
take part in attention, the initial model is not the base model. Prompts cannot be merged away.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from partialft.baselines._common import (
    Option,
    check_fresh,
    own_names,
    param_like,
    remove_hooks,
    resolve_options,
)
from partialft.core.layermap import LayerMap
from partialft.errors import PartialFTError

PREFIX = "vpt_"
OPTIONS = {
    "tokens": Option(50, 1, help="prompt tokens per block"),
    "dropout": Option(0.0, 0.0, 1.0, help="dropout on the prompt tokens while training"),
}


def _insert_prompts(block: nn.Module, args: tuple, *, num_prefix: int, dropout: float
                    ) -> tuple:
    """Forward pre-hook: (B, N, D) -> (B, num_prefix + P + N - num_prefix, D)."""
    x = args[0]
    prompts = F.dropout(block.vpt_prompts, dropout, block.training)
    prompts = prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, P, D)
    x = torch.cat([x[:, :num_prefix], prompts, x[:, num_prefix:]], dim=1)
    return (x, *args[1:])


def _drop_prompts(block: nn.Module, args: tuple, output: torch.Tensor, *, num_prefix: int
                  ) -> torch.Tensor:
    """Forward hook: remove this block's prompt outputs, (B, N + P, D) -> (B, N, D)."""
    num_prompts = block.vpt_prompts.shape[0]
    return torch.cat([output[:, :num_prefix], output[:, num_prefix + num_prompts:]], dim=1)


def _check_vit(model: nn.Module) -> None:
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise PartialFTError(f"vpt-deep supports timm VisionTransformer models only, not "
                             f"{type(model).__name__}; use adapter, ssf or lora instead.")


def _init_range(model: nn.Module, dim: int) -> float:
    """VPT's xavier-uniform bound for prompts: sqrt(6 / (3 * patch_h * patch_w + dim))."""
    patch = getattr(model.patch_embed, "patch_size", (16, 16))
    return math.sqrt(6.0 / (3 * patch[0] * patch[1] + dim))


class VPTDeep:
    """Prepend learnable prompts to every ViT block's input; train only those and the head."""

    name = "vpt-deep"
    prefix = PREFIX
    keeps_names = True
    options = OPTIONS

    def apply(self, model: nn.Module, layer_map: LayerMap, **options: Any
              ) -> tuple[nn.Module, list[str]]:
        opts = resolve_options(self.name, options, OPTIONS)
        _check_vit(model)
        check_fresh(model, PREFIX, self.name)
        num_prefix = int(model.num_prefix_tokens)
        ref = next(model.blocks.parameters())  # device and dtype of the new prompts
        dim = model.embed_dim
        bound = _init_range(model, dim)
        for block in model.blocks:
            block.vpt_prompts = param_like(ref, (opts["tokens"], dim))
            nn.init.uniform_(block.vpt_prompts, -bound, bound)
            block.register_forward_pre_hook(functools.partial(
                _insert_prompts, num_prefix=num_prefix, dropout=opts["dropout"]))
            block.register_forward_hook(functools.partial(_drop_prompts, num_prefix=num_prefix))
        return model, own_names(model, PREFIX)


def remove_prompts(model: nn.Module) -> nn.Module:
    """Take the prompts out again (the base model back), in place."""
    for block in model.modules():
        if remove_hooks(block, _insert_prompts) + remove_hooks(block, _drop_prompts):
            del block.vpt_prompts
    return model


VPT_DEEP = VPTDeep()
