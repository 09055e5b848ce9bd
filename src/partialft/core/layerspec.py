"""User-given layer specs: describe the residual layers of any ``nn.Module`` in YAML or JSON.

A spec maps layer ids to glob patterns over parameter names and layer ids to homogeneous groups;
see :func:`load_layer_spec` and docs/layer-spec.md. Files are read with ``yaml.safe_load`` or
``json.loads`` only, so no code runs.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from partialft.core.layermap import Layer, LayerMap
from partialft.errors import PartialFTError, first_items, read_text_file

SPEC_KEYS = ("layers", "groups", "head")


def load_layer_spec(path: str | Path) -> dict[str, Any]:
    """Read and check a layer spec from YAML or JSON (``safe_load``; no code runs).

    Format (see docs/layer-spec.md)::

        layers:             # layer id -> glob pattern(s) over parameter names
          encoder.0.attn: ["encoder.0.ln_1.*", "encoder.0.attn.*"]
          encoder.0.mlp:  ["encoder.0.ln_2.*", "encoder.0.mlp.*"]
        groups:             # group -> layer ids; "stage<s>.<kind>" names set stage and kind
          attn: [encoder.0.attn]
          ffn:  [encoder.0.mlp]
        head: ["fc.*"]      # optional; default: get_classifier() or the last nn.Linear
    """
    path = Path(path)
    text = read_text_file(path, "layer spec", "a YAML or JSON file")
    try:
        spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0]
        raise PartialFTError(f"layer spec {path} is not valid YAML/JSON ({reason}).") from None
    return check_layer_spec(spec, f"layer spec {path}")


def check_layer_spec(spec: Any, where: str = "the layer spec") -> dict[str, Any]:
    """Check a spec's shape (keys and value types) before any parameter is matched."""
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), dict) \
            or not spec["layers"] or not isinstance(spec.get("groups"), dict):
        raise PartialFTError(f"{where} needs a non-empty mapping 'layers: {{layer id: [param "
                             "patterns]}' and a mapping 'groups: {group: [layer ids]}'.")
    unknown = [str(k) for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise PartialFTError(f"{where} has unknown key(s) {first_items(unknown, 3)}; valid "
                             f"keys: {', '.join(SPEC_KEYS)}.")
    for layer_id, pats in spec["layers"].items():
        _check_strings(pats, f"layer {layer_id}", where, "parameter-name patterns")
    for group, ids in spec["groups"].items():
        _check_strings(ids, f"group {group}", where, "layer ids")
    if spec.get("head") is not None:
        _check_strings(spec["head"], "head", where, "parameter-name patterns")
    return spec


def _check_strings(value: Any, owner: str, where: str, what: str) -> None:
    ok = isinstance(value, str) or (
        isinstance(value, list) and value and all(isinstance(v, str) for v in value))
    if not ok:
        raise PartialFTError(f"{owner} in {where} is {value!r}; give a string or a non-empty "
                             f"list of {what}.")


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def layers_from_spec(
    spec: dict[str, Any], numel: dict[str, int], head: tuple[str, ...]
) -> LayerMap:
    patterns = {str(k): _as_list(v) for k, v in spec["layers"].items()}
    group_of = _invert_groups({str(g): _as_list(ids) for g, ids in spec["groups"].items()},
                              patterns)
    if spec.get("head"):
        head = tuple(_match("head", _as_list(spec["head"]), numel))
    claimed: dict[str, str] = {name: "head" for name in head}
    layers = []
    index_in_group: dict[str, int] = defaultdict(int)
    for layer_id, pats in patterns.items():
        names = _match(f"layer {layer_id}", pats, numel)
        for name in names:
            if name in claimed:
                raise PartialFTError(
                    f"parameter {name} is claimed by both {claimed[name]} and layer {layer_id} "
                    "in the layer spec; each parameter may belong to one layer (or the head)."
                )
            claimed[name] = f"layer {layer_id}"
        group = group_of[layer_id]
        stage, kind = _stage_and_kind(group)
        layers.append(Layer(layer_id, kind, stage, index_in_group[group], group, tuple(names),
                            sum(numel[n] for n in names)))
        index_in_group[group] += 1
    _check_stages(layers)
    return LayerMap("spec", layers, head, numel)


def _stage_and_kind(group: str) -> tuple[int, str]:
    """``stage2.attn`` -> (2, "attn"); ``ffn`` -> (0, "ffn")."""
    match = re.fullmatch(r"stage(\d+)\.(.+)", group)
    return (int(match.group(1)), match.group(2)) if match else (0, group)


def _check_stages(layers: list[Layer]) -> None:
    stages = sorted({la.stage for la in layers})
    if stages != list(range(len(stages))):
        raise PartialFTError(
            f"the layer spec's groups use stages {', '.join(map(str, stages))}; number stages "
            f"0, 1, 2, ... without gaps (group names like stage0.attn)."
        )


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


def _match(owner: str, pats: list[str], numel: dict[str, int]) -> list[str]:
    """Parameter names matching any glob in ``pats``, in model order; each glob must match."""
    names: dict[str, None] = {}
    for pat in pats:
        hits = [n for n in numel if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise PartialFTError(
                f"pattern {pat!r} of {owner} in the layer spec matches no parameter; "
                f"parameters look like {first_items(numel, 3)}."
            )
        names.update(dict.fromkeys(hits))
    return [n for n in numel if n in names]
