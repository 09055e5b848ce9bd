"""Residual layers and homogeneous groups of a model (paper Sec. 4.1, Appendix B, Table 6).

A *layer* is one residual unit: the module on a residual branch plus its pre-norm and
layer-scale. Its id is the dotted path of the branch's main module (timm naming). Layers of
identical structure and parameter count form a *homogeneous group*.

Known timm families are described by one small rule each (:data:`FAMILIES`); any other timm
model gets a best effort from its ``group_matcher``; any ``nn.Module`` at all can be described by
a user-given layer spec (:func:`load_layer_spec`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from partialft.core.layermap import Layer, LayerMap
from partialft.core.layerspec import check_layer_spec, layers_from_spec, load_layer_spec
from partialft.errors import option_error


@dataclass(frozen=True)
class Branch:
    """A residual branch inside a block: its kind, main module and the modules that belong to it.

    ``main`` lists alternative names (the first one present is used; ``""`` is the block itself,
    a whole-block residual, which then is the block's only layer); ``parts`` are the submodules
    whose parameters make up the layer, missing ones are skipped; ``classes``, when given, are
    class names the main module must have (MaxViT's ``conv`` is an MBConv or a ConvNeXt block);
    ``group`` names the layer's group within its stage when it is not the kind (MaxViT's two
    FFNs per block, one after each attention, form two groups as its two attentions do).
    """

    kind: str
    main: tuple[str, ...]
    parts: tuple[str, ...]
    classes: tuple[str, ...] = ()
    group: str = ""


@dataclass(frozen=True)
class Family:
    """How to find the layers of one model family: its classes, block paths and branches."""

    name: str
    classes: tuple[str, ...]  # "module:Class" of timm model classes (subclasses match too)
    block_pattern: str  # regex over module paths; optional groups (?P<stage>) (?P<index>)
    branches: tuple[Branch, ...]
    main_path: tuple[str, ...] = ()  # block submodules on the main path: non-residual
    stage_ends: str = ""  # model attribute: last block index of each stage of a flat list


_WHOLE_BLOCK = Branch("block", ("",), ("",))

FAMILIES: tuple[Family, ...] = (
    Family(
        "vit",  # ViT, DeiT (distilled too), CLIP, ... and Eva/BEiT, whose blocks name parts alike
        (
            "timm.models.vision_transformer:VisionTransformer",
            "timm.models.eva:Eva",
            "timm.models.beit:Beit",
        ),
        r"blocks\.(?P<index>\d+)",
        (  # "attns"/"ffns": ParallelThingsBlock's parallel branches, summed into one residual
            Branch("attn", ("attn", "attns"), ("norm1", "attn", "ls1", "gamma_1", "attns")),
            Branch("ffn", ("mlp", "ffns"), ("norm2", "mlp", "ls2", "gamma_2", "ffns")),
        ),
    ),
    Family(
        "swin",
        (
            "timm.models.swin_transformer:SwinTransformer",
            "timm.models.swin_transformer_v2:SwinTransformerV2",
        ),
        r"layers\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)",
        (
            Branch("attn", ("attn",), ("norm1", "attn")),
            Branch("ffn", ("mlp",), ("norm2", "mlp")),
        ),
    ),
    Family(
        "swin",  # Swin V2 "cr": res-post-norm; its optional norm3 acts on the main path
        ("timm.models.swin_transformer_v2_cr:SwinTransformerV2Cr",),
        r"stages\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)",
        (
            Branch("attn", ("attn",), ("norm1", "attn")),
            Branch("ffn", ("mlp",), ("norm2", "mlp")),
        ),
        main_path=("norm3",),
    ),
    Family(
        "convnext",
        ("timm.models.convnext:ConvNeXt",),
        r"stages\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)",
        (_WHOLE_BLOCK,),
    ),
    Family(
        "mlp-mixer",  # MLP-Mixer, ResMLP and gMLP: token-mixing and channel-mixing layers
        ("timm.models.mlp_mixer:MlpMixer",),
        r"blocks\.(?P<index>\d+)",
        (
            Branch("token", ("mlp_tokens", "linear_tokens"), ("norm1", "mlp_tokens",
                                                               "linear_tokens", "ls1")),
            Branch("channel", ("mlp_channels",), ("norm2", "norm", "mlp_channels", "ls2")),
        ),
    ),
    Family(
        "as-mlp",  # paper Table 6: AS layer (norm + AS module) and MLP layer per block
        ("partialft.models.as_mlp:ASMLP",),  # by name: core does not import models
        r"layers\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)",
        (
            Branch("as", ("axial_shift",), ("norm1", "axial_shift")),
            Branch("ffn", ("mlp",), ("norm2", "mlp")),
        ),
    ),
    Family(
        "metaformer",  # PoolFormer (v1/v2), ConvFormer, CAFormer: token mixer + channel MLP
        ("timm.models.metaformer:MetaFormer",),
        r"stages\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)",
        (
            Branch("token", ("token_mixer",), ("norm1", "token_mixer", "layer_scale1",
                                               "res_scale1")),
            Branch("channel", ("mlp",), ("norm2", "mlp", "layer_scale2", "res_scale2")),
        ),
    ),
    Family(
        "hiera",  # one flat block list; a stage's first block widens (its proj: the shortcut)
        ("timm.models.hiera:Hiera",),
        r"blocks\.(?P<index>\d+)",
        (
            Branch("attn", ("attn",), ("norm1", "attn", "ls1")),
            Branch("ffn", ("mlp",), ("norm2", "mlp", "ls2")),
        ),
        main_path=("proj",),
        stage_ends="stage_ends",
    ),
    Family(
        "maxvit",  # MaxViT, CoAtNet, MaxxViT, CoAtNeXt: blocks of four kinds of residual
        ("timm.models.maxxvit:MaxxVit",),
        r"stages\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)",
        (  # MaxViT block: conv, then window ("block") and grid attention, each with its MLP
            Branch("mbconv", ("conv",), ("conv",), ("MbConvBlock",)),
            Branch("convnext", ("conv",), ("conv",), ("ConvNeXtBlock",)),
            Branch("window-attn", ("attn_block.attn",),
                   ("attn_block.norm1", "attn_block.attn", "attn_block.ls1")),
            Branch("ffn", ("attn_block.mlp",),
                   ("attn_block.norm2", "attn_block.mlp", "attn_block.ls2"), group="window-ffn"),
            Branch("grid-attn", ("attn_grid.attn",),
                   ("attn_grid.norm1", "attn_grid.attn", "attn_grid.ls1")),
            Branch("ffn", ("attn_grid.mlp",),
                   ("attn_grid.norm2", "attn_grid.mlp", "attn_grid.ls2"), group="grid-ffn"),
            # CoAtNet: whole MBConv / ConvNeXt blocks, then transformer blocks
            Branch("mbconv", ("",), ("",), ("MbConvBlock",)),
            Branch("convnext", ("",), ("",), ("ConvNeXtBlock",)),
            Branch("attn", ("attn",), ("norm1", "attn", "ls1"), ("Attention2d",)),
            Branch("ffn", ("mlp",), ("norm2", "mlp", "ls2")),
        ),
        main_path=("shortcut", "conv.shortcut"),  # a stage's first block: pooled projection
    ),
    Family(
        "levit",  # attention and MLP residual sub-blocks (their norms are inside: BN)
        ("timm.models.levit:Levit",),
        r"stages\.(?P<stage>\d+)\.blocks\.(?P<index>\d+)",
        (
            Branch("attn", ("attn",), ("attn",)),
            Branch("ffn", ("mlp",), ("mlp",)),
        ),
    ),
)


def find_layers(model: nn.Module, spec: dict[str, Any] | str | Path | None = None,
                ignore: Collection[str] = ()) -> LayerMap:
    """Return the residual layers and homogeneous groups of ``model``.

    With ``spec`` (a dict or a YAML/JSON file, see :func:`load_layer_spec`) any module works;
    otherwise the model's timm family decides, then timm's ``group_matcher`` as a best effort.
    Parameters in ``ignore`` (a PEFT baseline's own) are left out, as if their modules were not
    there.
    """
    numel = {name: p.numel() for name, p in model.named_parameters() if name not in ignore}
    head = _head_params(model, numel)
    if spec is not None:
        spec_dict = load_layer_spec(spec) if isinstance(spec, (str, Path)) else spec
        return layers_from_spec(check_layer_spec(spec_dict, "the layer spec"), numel, head)
    family = _family_of(model)
    layers = _layers_from_family(model, family, numel) if family is not None else []
    if layers:
        return LayerMap(family.name, layers, head, numel)
    layers = _layers_from_group_matcher(model, numel, head)
    return LayerMap("group-matcher", layers, head, numel)


def _import_class(path: str) -> type | None:
    """The class ``module:Class`` if its module is loaded: an instance of a class whose module
    was never imported cannot exist, so nothing is imported here (core imports no models)."""
    module_name, _, class_name = path.partition(":")
    module = sys.modules.get(module_name)
    return getattr(module, class_name, None) if module is not None else None


def _family_of(model: nn.Module) -> Family | None:
    for family in FAMILIES:
        classes = [c for c in map(_import_class, family.classes) if c is not None]
        if isinstance(model, tuple(classes)):
            return family
    return None


def _head_params(model: nn.Module, numel: dict[str, int]) -> tuple[str, ...]:
    """Parameter names of the classifier: timm's ``get_classifier()``, else the last Linear."""
    heads: list[nn.Module] = []
    if hasattr(model, "get_classifier"):
        got = model.get_classifier()
        heads = list(got) if isinstance(got, (tuple, list)) else [got]
    else:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        heads = linears[-1:]
    ids = {id(m) for m in heads}
    names = []
    for mod_name, module in model.named_modules():
        if id(module) in ids:
            prefix = f"{mod_name}." if mod_name else ""
            names += [prefix + n for n, _ in module.named_parameters()]
    return tuple(n for n in names if n in numel)


def _params_under(prefix: str, numel: dict[str, int]) -> list[str]:
    """Parameters of submodule ``prefix``, or the parameter of that exact name (ResMLP's ls1)."""
    dotted = prefix + "."
    return [name for name in numel if name == prefix or name.startswith(dotted)]


def _layers_from_family(model: nn.Module, family: Family, numel: dict[str, int]) -> list[Layer]:
    """The layers of every block ``family`` finds in ``model``, in module order."""
    pattern = re.compile(family.block_pattern)
    submodules = dict(model.named_modules())
    ends = list(getattr(model, family.stage_ends, None) or []) if family.stage_ends else []
    layers = []
    for path in submodules:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        stage, index = _stage_and_index(match, ends)
        for layer_id, kind, group, names in _block_layers(path, family, submodules, numel):
            group = f"stage{stage}.{group}" if _multi_stage(family) else group
            layers.append(Layer(layer_id, kind, stage, index, group, tuple(names),
                                _sum(names, numel)))
    return layers


def _multi_stage(family: Family) -> bool:
    return "stage" in family.block_pattern or bool(family.stage_ends)


def _stage_and_index(match: re.Match[str], ends: list[int]) -> tuple[int, int]:
    """A block's stage and index within it: from the path, or (a flat block list such as
    Hiera's) from the last block index of each stage."""
    stage = int(match.groupdict().get("stage") or 0)
    index = int(match.groupdict().get("index") or 0)
    if ends:
        stage = sum(end < index for end in ends)
        index -= ends[stage - 1] + 1 if stage else 0
    return stage, index


def _block_layers(path: str, family: Family, submodules: dict[str, nn.Module],
                  numel: dict[str, int]) -> list[tuple[str, str, str, list[str]]]:
    """(id, kind, group, parameter names) of the layers of the block at ``path``.

    A whole-block branch (main ``""``) that fits is the block's only layer. A block whose
    branches leave some of its parameters uncovered (timm's fused ParallelScalingBlock, say) or
    claim one twice is one layer of kind ``block``, so no block parameter is ever mistaken for
    a non-residual one (except the family's declared ``main_path`` modules).
    """
    main_path = {n for part in family.main_path for n in _params_under(_join(path, part), numel)}
    out = []
    for branch in family.branches:
        main = _branch_main(path, branch, submodules)
        if main is None:
            continue
        names = [n for part in branch.parts for n in _params_under(_join(path, part), numel)
                 if n not in main_path]
        layer = (_join(path, main), branch.kind, branch.group or branch.kind,
                 list(dict.fromkeys(names)))
        if main == "":
            return [layer]
        if names:  # a branch without parameters (an empty token mixer) is nothing to train
            out.append(layer)
    covered = [n for *_, names in out for n in names] + sorted(main_path)
    in_block = _params_under(path, numel)
    if len(set(covered)) < len(covered) or any(n not in set(covered) for n in in_block):
        return [(path, "block", "block", in_block)]
    return out


def _branch_main(path: str, branch: Branch, submodules: dict[str, nn.Module]) -> str | None:
    """The first of ``branch.main`` present in the block (of one of ``branch.classes``)."""
    for name in branch.main:
        module = submodules.get(_join(path, name))
        if module is None:
            continue
        if not branch.classes or any(c.__name__ in branch.classes for c in type(module).__mro__):
            return name
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if name else path


def _sum(names: Any, numel: dict[str, int]) -> int:
    return sum(numel[n] for n in names)


def _layers_from_group_matcher(
    model: nn.Module, numel: dict[str, int], head: tuple[str, ...]
) -> list[Layer]:
    """Best effort for other timm models: each match of ``group_matcher``'s block regex is a layer.

    With two captures (``^layer(\\d+)\\.(\\d+)``) the first is the stage; each stage is one
    homogeneous group of kind ``block``.
    """
    cls = type(model).__name__
    pattern = _block_regex(model)
    if pattern is None:
        raise option_error(
            f"partialft does not know the residual layers of {cls} and its timm group_matcher "
            "names no blocks; describe them in a layer spec file and pass `layer_spec=FILE` "
            "(see docs/layer-spec.md)."
        )
    found: dict[str, tuple[int, int, list[str]]] = {}
    for name in numel:
        match = pattern.match(name)
        if match is None or name in head:
            continue
        numbers = [int(g) for g in match.groups() if g is not None]
        stage, index = (numbers[0], numbers[-1]) if len(numbers) > 1 else (0, numbers[-1])
        found.setdefault(match.group(0).rstrip("."), (stage, index, []))[2].append(name)
    stages = sorted({stage for stage, _, _ in found.values()})
    layers = [
        Layer(layer_id, "block", stages.index(stage), index, f"stage{stages.index(stage)}.block",
              tuple(names), _sum(names, numel))
        for layer_id, (stage, index, names) in found.items()
    ]
    if len(layers) < 2:
        raise option_error(
            f"timm's group_matcher of {cls} yields {len(layers)} block(s), too few to select "
            "layers from; pass a layer spec with `layer_spec=FILE` (see docs/layer-spec.md)."
        )
    if len(stages) == 1:
        layers = [Layer(la.id, la.kind, 0, la.index, "block", la.param_names, la.num_params)
                  for la in layers]
    return layers


def _block_regex(model: nn.Module) -> re.Pattern[str] | None:
    """The per-block regex of a timm ``group_matcher``: the one with the most captures.

    Entries with a fixed suffix (``('^layers\\.(\\d+).downsample', (0,))``) attach extra
    modules to a block and are skipped, as are regexes without a capture group.
    """
    matcher = getattr(model, "group_matcher", None)
    if not callable(matcher):
        return None
    blocks = matcher(coarse=False).get("blocks")
    entries = [(blocks, None)] if isinstance(blocks, str) else list(blocks or [])
    compiled = [re.compile(regex) for regex, suffix in entries if suffix is None]
    compiled = [c for c in compiled if c.groups]
    return max(compiled, key=lambda c: c.groups, default=None)


__all__ = ["FAMILIES", "Layer", "LayerMap", "check_layer_spec", "find_layers", "load_layer_spec"]
