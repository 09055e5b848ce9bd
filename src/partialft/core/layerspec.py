"""User-given layer specs: describe the residual layers of any ``nn.Module`` in YAML or JSON.

A spec maps layer ids to glob patterns over parameter names and layer ids to homogeneous groups;
see :func:`load_layer_spec` and docs/layer-spec.md. A ``{name}`` placeholder (``{i}``) in a layer
id and its patterns stands for a whole number and ranges over the values the model's parameter
names have, so one entry describes every block. Files are read with
:mod:`partialft.utils.parse` (YAML's safe constructors, JSON; no aliases, no deep nesting), so
no code runs.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from partialft.core.layermap import Layer, LayerMap
from partialft.errors import PartialFTError, first_items, read_text_file
from partialft.utils.parse import load_json, load_yaml

SPEC_KEYS = ("layers", "groups", "head")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def load_layer_spec(path: str | Path) -> dict[str, Any]:
    """Read and check a layer spec from YAML or JSON (``safe_load``; no code runs).

    ``path`` names the file; pass the result (or the path itself) as ``layer_spec`` to
    :func:`find_layers`, :func:`prepare` or :func:`get_partial_model`.

    Format (see docs/layer-spec.md)::

        layers:             # layer id -> glob pattern(s) over parameter names
          encoder.{i}.attn: ["encoder.{i}.ln_1.*", "encoder.{i}.attn.*"]  # {i}: every block
          encoder.{i}.mlp:  ["encoder.{i}.ln_2.*", "encoder.{i}.mlp.*"]
        groups:             # group -> layer ids; "stage<s>.<kind>" names set stage and kind
          attn: ["encoder.{i}.attn"]
          ffn:  ["encoder.{i}.mlp"]
        head: ["fc.*"]      # optional; default: get_classifier() or the last nn.Linear
    """
    path = Path(path)
    text = read_text_file(path, "layer spec", "a YAML or JSON file")
    what = f"layer spec {path}"  # one safe loader: aliases and deep nesting refused
    spec = load_json(text, what) if path.suffix == ".json" else load_yaml(text, what)
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
    _check_placeholders(spec, where)
    return spec


def _check_placeholders(spec: dict[str, Any], where: str) -> None:
    """Placeholders are well formed, patterns use only their layer id's, groups only known ones."""
    known: set[str] = set()
    for layer_id, pats in spec["layers"].items():
        names = placeholders(str(layer_id), f"layer {layer_id}", where)
        known |= set(names)
        pats = _as_list(pats)
        for pat in pats:
            extra = [n for n in placeholders(pat, f"layer {layer_id}", where) if n not in names]
            if extra:
                raise PartialFTError(
                    f"pattern {pat!r} of layer {layer_id} in {where} uses the unknown "
                    f"placeholder {{{extra[0]}}}; a pattern may use only its layer id's "
                    f"placeholders ({', '.join(f'{{{n}}}' for n in names) or 'none'}).")
        if names and not any(set(names) <= set(placeholders(p, "", where)) for p in pats):
            raise PartialFTError(
                f"no pattern of layer {layer_id} in {where} has all of its placeholders, so the "
                "values they range over are unknown; use them all in at least one pattern.")
    for group, ids in spec["groups"].items():
        if placeholders(str(group), f"group {group}", where):
            raise PartialFTError(f"group name {group} in {where} holds a placeholder; name each "
                                 "group in full (stage0.attn, stage1.attn, ...).")
        for layer_id in _as_list(ids):
            _check_known(placeholders(layer_id, f"group {group}", where), known,
                         f"layer id {layer_id!r} of group {group} in {where}")
    for pat in _as_list(spec.get("head") or []):
        _check_known(placeholders(pat, "head", where), set(), f"head pattern {pat!r} in {where}")


def _check_known(names: list[str], known: set[str], owner: str) -> None:
    """Refuse a placeholder that no layer id defines."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PartialFTError(f"{owner} uses the unknown placeholder {{{unknown[0]}}}; known "
                             f"placeholders are those of the layer ids "
                             f"({', '.join(f'{{{n}}}' for n in sorted(known)) or 'none'}).")


def placeholders(text: str, owner: str, where: str) -> list[str]:
    """The ``{name}`` placeholders of ``text``, in order; a malformed one is an error."""
    names = _PLACEHOLDER.findall(text)
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z_]\w*", n)]
    stray = _PLACEHOLDER.sub("", text)
    if bad or "{" in stray or "}" in stray:
        shown = f"{{{bad[0]}}}" if bad else "a stray brace"
        raise PartialFTError(f"{owner} in {where} ({text!r}) has {shown}, which is no "
                             "placeholder; a placeholder is a name in braces such as {i} and "
                             "stands for a whole number.")
    return list(dict.fromkeys(names))


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
    """The layers a checked spec describes in a model with parameters ``numel``, in the order
    of their first parameter in the model (depth order)."""
    patterns = expand_layers({str(k): _as_list(v) for k, v in spec["layers"].items()}, numel)
    group_of = _invert_groups({str(g): _as_list(ids) for g, ids in spec["groups"].items()},
                              patterns)
    if spec.get("head"):
        head = tuple(_match("head", _as_list(spec["head"]), numel))
    claimed: dict[str, str] = {name: "head" for name in head}
    matched = {layer_id: _claim(layer_id, pats, numel, claimed)
               for layer_id, pats in patterns.items()}
    position = {name: i for i, name in enumerate(numel)}
    order = sorted(matched, key=lambda layer_id: position[matched[layer_id][0]])
    layers = []
    index_in_group: dict[str, int] = defaultdict(int)
    for layer_id in order:
        names, group = matched[layer_id], group_of[layer_id]
        stage, kind = _stage_and_kind(group)
        layers.append(Layer(layer_id, kind, stage, index_in_group[group], group, tuple(names),
                            sum(numel[n] for n in names)))
        index_in_group[group] += 1
    _check_stages(layers)
    return LayerMap("spec", layers, head, numel)


def _claim(layer_id: str, pats: list[str], numel: dict[str, int],
           claimed: dict[str, str]) -> list[str]:
    """The parameters of one layer; each may belong to one layer or the head only."""
    names = _match(f"layer {layer_id}", pats, numel)
    for name in names:
        if name in claimed:
            raise PartialFTError(
                f"parameter {name} is claimed by both {claimed[name]} and layer {layer_id} "
                "in the layer spec; each parameter may belong to one layer (or the head)."
            )
        claimed[name] = f"layer {layer_id}"
    return names


def expand_layers(patterns: dict[str, list[str]], numel: dict[str, int]
                  ) -> dict[str, list[str]]:
    """Layer id -> patterns with every placeholder layer replaced by one layer per value.

    A placeholder ranges over the whole numbers that parameter names have in its place (in
    model order), found with the patterns that hold all of the layer id's placeholders.
    """
    out: dict[str, list[str]] = {}
    source: dict[str, str] = {}
    for layer_id, pats in patterns.items():
        names = placeholders(layer_id, f"layer {layer_id}", "the layer spec")
        for values in _bindings(layer_id, names, pats, numel) if names else [()]:
            concrete = _fill(layer_id, names, values)
            if concrete in out:
                raise PartialFTError(f"layer id {concrete} comes from both {source[concrete]} "
                                     f"and {layer_id} in the layer spec; each layer id must be "
                                     "unique.")
            out[concrete], source[concrete] = [_fill(p, names, values) for p in pats], layer_id
    return out


def _bindings(layer_id: str, names: list[str], pats: list[str], numel: dict[str, int]
              ) -> list[tuple[str, ...]]:
    """The placeholder values of a layer id that the model has, in model order."""
    binders = [p for p in pats if set(names) <= set(_PLACEHOLDER.findall(p))]
    regexes = [_template_regex(p, glob=True) for p in binders]
    found: dict[tuple[str, ...], None] = {}
    for param in numel:
        for regex in regexes:
            match = regex.fullmatch(param)
            if match:
                found.setdefault(tuple(match.group(n) for n in names), None)
    if not found:
        raise PartialFTError(f"pattern {binders[0]!r} of layer {layer_id} in the layer spec "
                             f"matches no parameter; parameters look like "
                             f"{first_items(numel, 3)}.")
    return list(found)


def _fill(template: str, names: list[str], values: tuple[str, ...]) -> str:
    """``template`` with each placeholder replaced by its value."""
    for name, value in zip(names, values, strict=True):
        template = template.replace(f"{{{name}}}", value)
    return template


def _template_regex(template: str, glob: bool) -> re.Pattern[str]:
    """A regex for ``template``: each placeholder a whole number (the same one where it repeats),
    the rest a glob (``*``, ``?``, ``[...]``) or, without ``glob``, literal text."""
    parts, seen, last = [], set(), 0
    for match in _PLACEHOLDER.finditer(template):
        literal = template[last:match.start()]
        parts.append(_glob_regex(literal) if glob else re.escape(literal))
        name = match.group(1)
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>\\d+)")
        seen.add(name)
        last = match.end()
    tail = template[last:]
    parts.append(_glob_regex(tail) if glob else re.escape(tail))
    return re.compile("".join(parts))


def _glob_regex(glob: str) -> str:
    """``fnmatch``'s glob syntax as a regex fragment (``fnmatch.translate`` anchors the whole)."""
    out, i = [], 0
    while i < len(glob):
        if glob[i] == "[":
            fragment, i = _glob_class(glob, i)
            out.append(fragment)
        else:
            out.append({"*": ".*", "?": "."}.get(glob[i], re.escape(glob[i])))
            i += 1
    return "".join(out)


def _glob_class(glob: str, start: int) -> tuple[str, int]:
    """The regex of the ``[...]`` set at ``glob[start]`` and the index after it (a ``[``
    without its ``]`` is literal, as in ``fnmatch``)."""
    j = start + 1
    j += glob[j:j + 1] == "!"
    j += glob[j:j + 1] == "]"
    close = glob.find("]", j)
    if close == -1:
        return re.escape("["), start + 1
    body = re.sub(r"([\\\[&~|])", r"\\\1", glob[start + 1:close])  # no nested-set warnings
    body = "^" + body[1:] if body.startswith("!") else "\\" + body if body.startswith("^") \
        else body
    return f"[{body}]", close + 1


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


def _group_members(group: str, ids: list[str], patterns: dict[str, Any]) -> list[str]:
    """A group's layer ids, each placeholder entry replaced by the layer ids it matches."""
    out: list[str] = []
    for entry in ids:
        if not _PLACEHOLDER.search(entry):
            out.append(entry)
            continue
        regex = _template_regex(entry, glob=False)
        hits = [layer_id for layer_id in patterns if regex.fullmatch(layer_id)]
        if not hits:
            raise PartialFTError(f"group {group} names layers {entry!r}, which matches no layer "
                                 f"of the layer spec; layers look like {first_items(patterns, 3)}.")
        out += hits
    return out


def _invert_groups(groups: dict[str, list[str]], patterns: dict[str, Any]) -> dict[str, str]:
    group_of: dict[str, str] = {}
    for group, ids in groups.items():
        for layer_id in _group_members(group, ids, patterns):
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
