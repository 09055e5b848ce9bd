"""Residual layers and homogeneous groups of a model (paper Sec. 4.1, Appendix B, Table 6).

A *layer* is one residual unit: the module on a residual branch plus its pre-norm and
layer-scale. Its id is the dotted path of the branch's main module (timm naming). Layers of
identical structure and parameter count form a *homogeneous group*.

Known timm families are described by one small rule each (:data:`FAMILIES`); any other timm
model gets a best effort from its ``group_matcher``; any ``nn.Module`` at all can be described by
a user-given layer spec (:func:`load_layer_spec`).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn
import yaml

from partialft.errors import PartialFTError, first_items


@dataclass(frozen=True)
class Layer:
    """One residual unit of a model."""

    id: str
    kind: str  # attn | ffn | block | token | channel | a spec's own kind
    stage: int
    index: int  # block index within its stage
    group: str
    param_names: tuple[str, ...]
    num_params: int


@dataclass
class LayerMap:
    """Every residual layer of a model, its head and its parameter sizes, in depth order."""

    family: str
    layers: list[Layer]
    head_params: tuple[str, ...]
    param_numel: dict[str, int] = field(repr=False)

    @property
    def num_stages(self) -> int:
        return 1 + max((layer.stage for layer in self.layers), default=0)

    def by_id(self) -> dict[str, Layer]:
        return {layer.id: layer for layer in self.layers}

    def groups(self) -> dict[str, list[Layer]]:
        """Homogeneous groups in depth order of their first layer."""
        out: dict[str, list[Layer]] = defaultdict(list)
        for layer in self.layers:
            out[layer.group].append(layer)
        return dict(out)

    def kinds(self) -> list[str]:
        return sorted({layer.kind for layer in self.layers})

    def layer_params(self) -> set[str]:
        return {name for layer in self.layers for name in layer.param_names}

    def non_residual_params(self) -> list[str]:
        """Parameters outside every layer and the head: embeddings, downsampling, final norm."""
        taken = self.layer_params() | set(self.head_params)
        return [name for name in self.param_numel if name not in taken]

    def count(self, names: Any) -> int:
        return sum(self.param_numel[name] for name in names)

    @property
    def total_params(self) -> int:
        return sum(self.param_numel.values())

    def to_dict(self) -> dict[str, Any]:
        groups = self.groups()
        return {
            "family": self.family,
            "num_stages": self.num_stages,
            "total_params": self.total_params,
            "head_params": self.count(self.head_params),
            "non_residual_params": self.count(self.non_residual_params()),
            "groups": {
                name: {"layers": [la.id for la in ls], "params": sum(la.num_params for la in ls)}
                for name, ls in groups.items()
            },
            "layers": [
                {k: v for k, v in asdict(layer).items() if k != "param_names"}
                for layer in self.layers
            ],
        }


@dataclass(frozen=True)
class Branch:
    """A residual branch inside a block: its kind, main module and the modules that belong to it.

    ``main`` lists alternative names (the first one present is used); ``parts`` are the
    submodules whose parameters make up the layer, missing ones are skipped.
    """

    kind: str
    main: tuple[str, ...]
    parts: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    """How to find the layers of one model family: its classes, block paths and branches."""

    name: str
    classes: tuple[str, ...]  # "module:Class" of timm model classes (subclasses match too)
    block_pattern: str  # regex over module paths; optional groups (?P<stage>) (?P<index>)
    branches: tuple[Branch, ...]


_WHOLE_BLOCK = Branch("block", ("",), ("",))

FAMILIES: tuple[Family, ...] = (
    Family(
        "vit",
        ("timm.models.vision_transformer:VisionTransformer",),
        r"blocks\.(?P<index>\d+)",
        (
            Branch("attn", ("attn",), ("norm1", "attn", "ls1")),
            Branch("ffn", ("mlp",), ("norm2", "mlp", "ls2")),
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
)


def find_layers(model: nn.Module, spec: dict[str, Any] | str | Path | None = None) -> LayerMap:
    """Return the residual layers and homogeneous groups of ``model``.

    With ``spec`` (a dict or a YAML/JSON file, see :func:`load_layer_spec`) any module works;
    otherwise the model's timm family decides, then timm's ``group_matcher`` as a best effort.
    """
    numel = {name: p.numel() for name, p in model.named_parameters()}
    head = _head_params(model, numel)
    if spec is not None:
        spec_dict = load_layer_spec(spec) if isinstance(spec, (str, Path)) else spec
        return _layers_from_spec(spec_dict, numel, head)
    family = _family_of(model)
    if family is not None:
        layers = _layers_from_family(model, family, numel)
        return LayerMap(family.name, layers, head, numel)
    layers = _layers_from_group_matcher(model, numel, head)
    return LayerMap("group-matcher", layers, head, numel)


def _import_class(path: str) -> type | None:
    module_name, _, class_name = path.partition(":")
    try:
        module = __import__(module_name, fromlist=[class_name])
    except ImportError:  # pragma: no cover - timm always has these modules
        return None
    return getattr(module, class_name, None)


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
    pattern = re.compile(family.block_pattern + r"$")
    submodules = dict(model.named_modules())
    found: list[tuple[str, int, int, str, list[str]]] = []
    for path in submodules:
        match = pattern.fullmatch(path)
        if not match:
            continue
        stage = int(match.groupdict().get("stage") or 0)
        index = int(match.groupdict().get("index") or 0)
        for branch in family.branches:
            main = next((m for m in branch.main if _join(path, m) in submodules), None)
            if main is None:
                continue
            names = [n for part in branch.parts for n in _params_under(_join(path, part), numel)]
            found.append((_join(path, main), stage, index, branch.kind, names))
    multi_stage = len({stage for _, stage, _, _, _ in found}) > 1 or "stage" in family.block_pattern
    layers = []
    for layer_id, stage, index, kind, names in found:
        group = f"stage{stage}.{kind}" if multi_stage else kind
        layers.append(Layer(layer_id, kind, stage, index, group, tuple(names), _sum(names, numel)))
    return layers


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
        raise PartialFTError(
            f"partialft does not know the residual layers of {cls} and its timm group_matcher "
            "names no blocks; describe them in a layer spec file and pass --layer-spec FILE "
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
        raise PartialFTError(
            f"timm's group_matcher of {cls} yields {len(layers)} block(s), too few to select "
            "layers from; pass a layer spec with --layer-spec FILE (see docs/layer-spec.md)."
        )
    if len(stages) == 1:
        layers = [Layer(la.id, la.kind, 0, la.index, "block", la.param_names, la.num_params)
                  for la in layers]
    return layers


def _block_regex(model: nn.Module) -> re.Pattern[str] | None:
    """The first block regex with a capture group in a timm ``group_matcher``, if any."""
    if not hasattr(model, "group_matcher"):
        return None
    blocks = model.group_matcher(coarse=False).get("blocks")
    candidates = [blocks] if isinstance(blocks, str) else [b[0] for b in blocks or []]
    for regex in candidates:
        compiled = re.compile(regex)
        if compiled.groups:
            return compiled
    return None


# --- user-given layer specs -------------------------------------------------------------------


def load_layer_spec(path: str | Path) -> dict[str, Any]:
    """Read a layer spec from YAML or JSON (``safe_load``; no code runs).

    Format::

        layers:             # layer id -> glob patterns over parameter names
          encoder.0.attn: ["encoder.0.ln_1.*", "encoder.0.attn.*"]
          encoder.0.mlp:  ["encoder.0.ln_2.*", "encoder.0.mlp.*"]
        groups:             # group -> layer ids; "stage<s>.<kind>" names set stage and kind
          attn: [encoder.0.attn]
          ffn:  [encoder.0.mlp]
        head: ["fc.*"]      # optional; default: get_classifier() or the last nn.Linear
    """
    path = Path(path)
    if not path.is_file():
        raise PartialFTError(f"layer spec {path} does not exist; pass a YAML or JSON file.")
    text = path.read_text()
    try:
        spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PartialFTError(f"layer spec {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), dict):
        raise PartialFTError(
            f"layer spec {path} needs a mapping 'layers: {{layer id: [param patterns]}}' "
            "and a mapping 'groups: {group: [layer ids]}'."
        )
    return spec


def _layers_from_spec(
    spec: dict[str, Any], numel: dict[str, int], head: tuple[str, ...]
) -> LayerMap:
    patterns: dict[str, list[str]] = spec["layers"]
    groups: dict[str, list[str]] = spec.get("groups") or {}
    group_of = _invert_groups(groups, patterns)
    if spec.get("head"):
        head = tuple(_match(["head"], spec["head"], numel))
    claimed: dict[str, str] = {}
    layers = []
    index_in_group: dict[str, int] = defaultdict(int)
    for layer_id, pats in patterns.items():
        names = _match([layer_id], pats if isinstance(pats, list) else [pats], numel)
        for name in names:
            if name in claimed:
                raise PartialFTError(
                    f"parameter {name} is claimed by both layer {claimed[name]} and layer "
                    f"{layer_id} in the layer spec; each parameter may belong to one layer."
                )
            claimed[name] = layer_id
        group = group_of[layer_id]
        stage_match = re.match(r"stage(\d+)\.", group)
        stage = int(stage_match.group(1)) if stage_match else 0
        kind = group.split(".")[-1]
        layers.append(Layer(layer_id, kind, stage, index_in_group[group], group, tuple(names),
                            _sum(names, numel)))
        index_in_group[group] += 1
    return LayerMap("spec", layers, head, numel)


def _invert_groups(groups: dict[str, list[str]], patterns: dict[str, Any]) -> dict[str, str]:
    group_of: dict[str, str] = {}
    for group, ids in groups.items():
        for layer_id in ids:
            if layer_id not in patterns:
                raise PartialFTError(
                    f"group {group} names layer {layer_id}, which is not under 'layers' in the "
                    f"layer spec; known layers: {first_items(patterns)}."
                )
            if layer_id in group_of:
                raise PartialFTError(
                    f"layer {layer_id} is in groups {group_of[layer_id]} and {group}; "
                    "each layer belongs to exactly one group."
                )
            group_of[layer_id] = group
    missing = [layer_id for layer_id in patterns if layer_id not in group_of]
    if missing:
        raise PartialFTError(
            f"layer(s) {first_items(missing)} are in no group of the layer spec; add each "
            "layer id to one list under 'groups'."
        )
    return group_of


def _match(owner: list[str], pats: list[str], numel: dict[str, int]) -> list[str]:
    names = []
    for pat in pats:
        hits = [n for n in numel if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise PartialFTError(
                f"pattern {pat!r} of {owner[0]} in the layer spec matches no parameter; "
                f"parameters look like {first_items(numel, 3)}."
            )
        names += [h for h in hits if h not in names]
    return names
