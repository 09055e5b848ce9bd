"""LoRA baseline (Hu et al. 2021) through Hugging Face ``peft``, injected into timm models.

``peft.inject_adapter_in_model`` wraps ``attn.qkv``, ``attn.proj``, ``mlp.fc1`` and ``mlp.fc2`` of
every block in a ``peft`` LoRA layer: ``y = W x + (alpha / rank) * B A x`` with ``A`` random and
``B`` zero, so the initial model equals the base model. Module paths are kept (find_layers works
on the result), but the wrapped weights move one level down: ``blocks.0.attn.qkv.weight``
becomes ``blocks.0.attn.qkv.base_layer.weight``; the trained tensors are
``blocks.0.attn.qkv.lora_A.default.weight`` and ``...lora_B.default.weight``.

ViT-B/16, rank 8: per block ``8 * ((768 + 2304) + (768 + 768) + 2 * (768 + 3072)) = 98,304``,
times 12 = 1,179,648, + head 76,900 = 1,256,548 (1.26 M). :func:`merge_lora` merges with peft's
own ``merge()`` and unwraps the layers, giving back the base model's structure and names.
"""

from __future__ import annotations

import re
from typing import Any

import torch.nn as nn

from partialft.baselines._common import Option, check_fresh, own_names, resolve_options
from partialft.core.layermap import LayerMap
from partialft.errors import PartialFTError

PREFIX = "lora_"
TARGETS = ("qkv", "attn.proj", "mlp.fc1", "mlp.fc2")  # the default: all four projections
OPTIONS = {
    "rank": Option(8, 1, help="rank of the update B A"),
    "alpha": Option(16.0, 0.0, low_open=True, help="scaling numerator: update * alpha / rank"),
    "dropout": Option(0.0, 0.0, 1.0, help="dropout on the LoRA branch input"),
}


def target_regex(targets: str | list[str] | tuple[str, ...] = TARGETS) -> str:
    """The peft ``target_modules`` regex for some of :data:`TARGETS` (a list or 'qkv,mlp.fc1')."""
    names = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else list(targets)
    names = [n for n in names if n]
    bad = [n for n in names if n not in TARGETS]
    if bad or not names:
        raise PartialFTError(f"lora targets {','.join(names) or targets!r} are not valid; use a "
                             f"comma-separated subset of {','.join(TARGETS)}.")
    return r".*\.(" + "|".join(re.escape(n) for n in names) + r")$"


def _check_targets(model: nn.Module, regex: str) -> None:
    pattern = re.compile(regex)
    if not any(pattern.fullmatch(path) and isinstance(m, (nn.Linear, nn.Conv2d))
               for path, m in model.named_modules()):
        raise PartialFTError(f"lora found none of its target layers in {type(model).__name__}; "
                             "use ssf or a layer method instead.")


class LoRA:
    """Inject peft LoRA layers into attention and FFN projections; train only those + head."""

    name = "lora"
    prefix = PREFIX
    keeps_names = True  # module paths stay; wrapped weights are renamed to *.base_layer.*
    options = OPTIONS

    def apply(self, model: nn.Module, layer_map: LayerMap, **options: Any
              ) -> tuple[nn.Module, list[str]]:
        from partialft.utils.extras import require

        require("peft", "method lora")
        import peft

        options = dict(options)
        regex = target_regex(options.pop("targets", TARGETS))
        opts = resolve_options(self.name, options, OPTIONS)
        check_fresh(model, PREFIX, self.name)
        _check_targets(model, regex)
        config = peft.LoraConfig(r=opts["rank"], lora_alpha=opts["alpha"],
                                 lora_dropout=opts["dropout"], target_modules=regex,
                                 bias="none")
        model = peft.inject_adapter_in_model(config, model)
        return model, own_names(model, PREFIX)


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA update into its base weight (peft's ``merge``) and unwrap, in place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for path, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_path, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent_path), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


LORA = LoRA()
