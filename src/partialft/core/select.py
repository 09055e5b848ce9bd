"""Which layers to train: the paper's manual strategies (Fig. 3), explicit ids, and FAPFT top-k.

Every strategy is a function ``(layer_map, options) -> Selection`` in the :data:`METHODS`
registry; PEFT baselines register themselves in :mod:`partialft.baselines`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from partialft.core.layers import Layer, LayerMap
from partialft.errors import PartialFTError, first_items, option_error, suggest

# Layer kinds that play the role of attention (token mixing) and of the FFN (channel mixing):
# AS-MLP's AS layers and MaxViT's window and grid attention mix tokens; MaxViT's MBConv (and
# ConvNeXt) layers mix both, so only layer-agnostic methods (fapft, layers, *-blocks) train them.
ROLES = {"attn": ("attn", "token", "as", "window-attn", "grid-attn"), "ffn": ("ffn", "channel")}
MODES = ("large", "small")


@dataclass(frozen=True)
class Selection:
    """The layer ids to train (the head is always trained); ``train_all`` for full fine-tuning."""

    method: str
    layers: tuple[str, ...] = ()
    train_all: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "layers": list(self.layers), "train_all": self.train_all,
                **self.options}


@dataclass
class SelectOptions:
    """Inputs some strategies need: explicit ids, or angles with top-k and mode."""

    layers: Sequence[str] | None = None
    angles: Mapping[str, float] | None = None
    topk: int | str | Sequence[int] | None = None
    mode: str | None = None  # fapft: "large" or "small"; no default (the task decides)


MODE_NEEDED = ("method 'fapft' needs `mode`: large (train the layers whose angles are largest; "
               "the paper's choice for hard tasks such as ImageNet-1K), small (the smallest; for "
               "easy tasks such as CIFAR-100) or auto (short pilot runs of both, judged on the "
               "validation split).")

# the options each strategy takes (the others take none): one name each, the same as the
# keyword of prepare/get_partial_model, the YAML key and the CLI flag (--topk)
SELECT_OPTIONS: dict[str, dict[str, str]] = {
    "layers": {"layers": "the layer ids to train (a list, or comma-separated)"},
    "fapft": {"angles": "fine-tuned angles: a layer id -> degrees mapping (the library) or the "
                        "angles JSON of 'partialft angles' (a file)",
              "topk": "layers per homogeneous group: one number or one per stage (0,0,6,2); "
                      "default: paper Table 7",
              "mode": "large (train the largest angles; hard tasks) or small (easy tasks); "
                      "required"},
}

# older spellings of options (partialft 0.1.0 and before) -> their one name now
RENAMED_OPTIONS = {"prompts": "tokens", "lora_rank": "rank", "lora_alpha": "alpha",
                   "lora_targets": "targets", "adapter_dim": "dim", "vpt_tokens": "tokens"}

Strategy = Callable[[LayerMap, SelectOptions], Selection]
METHODS: dict[str, Strategy] = {}


def register(name: str) -> Callable[[Strategy], Strategy]:
    def deco(fn: Strategy) -> Strategy:
        METHODS[name] = fn
        return fn

    return deco


def select_layers(layer_map: LayerMap, method: str, **options: Any) -> Selection:
    """Apply strategy ``method`` (a key of :data:`METHODS`) to ``layer_map``.

    ``options`` (None means not given; an option the method does not take is an error):

    - ``layers``: method ``layers``: the layer ids to train.
    - ``angles``: method ``fapft``: layer id -> fine-tuned angle in degrees.
    - ``topk``: method ``fapft``: layers per homogeneous group, one number, one per stage
      (``"0,0,6,2"`` or a list); default paper Table 7.
    - ``mode``: method ``fapft``: ``"large"`` (hard tasks) or ``"small"`` (easy tasks).
    """
    if method not in METHODS:
        raise PartialFTError(f"unknown method {method!r}{suggest(method, METHODS)}; valid "
                             f"methods: {', '.join(METHODS)}.")
    given = {k: v for k, v in options.items() if v is not None}
    check_option_names(method, given, SELECT_OPTIONS.get(method, {}))
    if isinstance(given.get("layers"), str):  # "blocks.3.attn,blocks.5.mlp"
        given["layers"] = [s.strip() for s in given["layers"].split(",") if s.strip()]
    return METHODS[method](layer_map, SelectOptions(**given))


def check_option_names(method: str, given: Mapping[str, Any], valid: Mapping[str, Any]) -> None:
    """Refuse an option ``method`` does not take, naming it, the valid ones and a near name."""
    unknown = [k for k in given if k not in valid]
    if unknown:
        name = unknown[0]
        if RENAMED_OPTIONS.get(name) in valid:
            raise option_error(f"the option `{name}` of {method} is now called "
                               f"`{RENAMED_OPTIONS[name]}`; rename it.")
        takes = ", ".join(f"`{v}`" for v in valid) if valid else "none"
        close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(f'`{c}`' for c in close)}?)" if close else ""
        raise option_error(f"method {method!r} does not take the option `{name}`{hint}; its "
                           f"options: {takes}.")


def _of_role(layer_map: LayerMap, role: str, method: str) -> list[Layer]:
    layers = [la for la in layer_map.layers if la.kind in ROLES[role]]
    if not layers:
        raise PartialFTError(
            f"method {method!r} trains {role} layers, but this {layer_map.family} model only has "
            f"layers of kind {', '.join(layer_map.kinds())}; use a *-blocks method, fapft or "
            "layers instead."
        )
    return layers


def _blocks(layer_map: LayerMap) -> list[tuple[int, int]]:
    """Distinct blocks (stage, index) in depth order."""
    seen: dict[tuple[int, int], None] = {}
    for la in layer_map.layers:
        seen.setdefault((la.stage, la.index), None)
    return list(seen)


def _half(layer_map: LayerMap, which: str, method: str) -> set[tuple[int, int]]:
    blocks = _blocks(layer_map)
    half = len(blocks) // 2  # an odd middle block belongs to neither half
    if half == 0:
        raise PartialFTError(f"method {method!r} needs at least 2 blocks; the model has "
                             f"{len(blocks)}.")
    return set(blocks[:half] if which == "first" else blocks[-half:])


@register("full")
def _full(layer_map: LayerMap, _: SelectOptions) -> Selection:
    return Selection("full", tuple(la.id for la in layer_map.layers), train_all=True)


@register("linear")
def _linear(layer_map: LayerMap, _: SelectOptions) -> Selection:
    return Selection("linear")


def _role_strategy(role: str, half: str | None) -> Strategy:
    name = role if half is None else f"{half}-half-{role}"

    def strategy(layer_map: LayerMap, _: SelectOptions) -> Selection:
        layers = _of_role(layer_map, role, name)
        if half is not None:
            keep = _half(layer_map, half, name)
            layers = [la for la in layers if (la.stage, la.index) in keep]
        return Selection(name, tuple(la.id for la in layers))

    strategy.__doc__ = f"Train the {half or 'all'} {role} layers."
    return strategy


def _blocks_strategy(half: str) -> Strategy:
    name = f"{half}-half-blocks"

    def strategy(layer_map: LayerMap, _: SelectOptions) -> Selection:
        keep = _half(layer_map, half, name)
        return Selection(name, tuple(la.id for la in layer_map.layers
                                     if (la.stage, la.index) in keep))

    return strategy


for _role in ROLES:
    register(_role)(_role_strategy(_role, None))
    for _h in ("first", "last"):
        register(f"{_h}-half-{_role}")(_role_strategy(_role, _h))
for _h in ("first", "last"):
    register(f"{_h}-half-blocks")(_blocks_strategy(_h))


@register("layers")
def _explicit(layer_map: LayerMap, opts: SelectOptions) -> Selection:
    if not opts.layers:
        raise option_error("method 'layers' needs layer ids, e.g. `layers=['blocks.3.attn', "
                           "'blocks.5.mlp']|blocks.3.attn,blocks.5.mlp`; list them with "
                           "'partialft layers MODEL'.")
    known = layer_map.by_id()
    for layer_id in opts.layers:
        if layer_id not in known:
            raise PartialFTError(f"unknown layer id {layer_id!r}{suggest(layer_id, known)}; "
                                 f"valid ids look like {first_items(known, 3)}.")
    wanted = set(opts.layers)
    return Selection("layers", tuple(la.id for la in layer_map.layers if la.id in wanted))


@register("fapft")
def _fapft(layer_map: LayerMap, opts: SelectOptions) -> Selection:
    """Top-k largest (hard task) or smallest (easy task) angles within each homogeneous group."""
    if opts.angles is None:
        raise option_error("method 'fapft' needs fine-tuned angles: pass `angles=ANGLES|FILE` "
                           "(from 'partialft angles' or compute_angles) or use 'partialft "
                           "fapft'.")
    if opts.mode is None:
        raise option_error(MODE_NEEDED)
    if opts.mode not in MODES:
        raise PartialFTError(f"mode {opts.mode!r} is not valid; use 'large' (hard tasks) or "
                             "'small' (easy tasks).")
    ks = parse_topk(opts.topk, layer_map, opts.mode)
    missing = [la.id for la in layer_map.layers if la.id not in opts.angles]
    if missing:
        raise PartialFTError(f"the angles lack layer(s) {first_items(missing, 3)}; they were "
                             "computed for another model.")
    chosen: set[str] = set()
    for group, layers in layer_map.groups().items():
        k = ks[layers[0].stage]
        if k > len(layers):
            raise PartialFTError(f"top-k {k} for group {group} is larger than the group, which "
                                 f"has {len(layers)} layers; use 0..{len(layers)}.")
        ordered = sorted(layers, key=lambda la: opts.angles[la.id],
                         reverse=opts.mode == "large")
        chosen |= {la.id for la in ordered[:k]}
    return Selection("fapft", tuple(la.id for la in layer_map.layers if la.id in chosen),
                     options={"topk": ks, "mode": opts.mode})


def default_topk(layer_map: LayerMap, mode: str) -> list[int]:
    """Paper Table 7 defaults, written as a rule that reproduces the table for every family.

    The second-to-last stage (the only one for ViT) trains a third of its blocks, rounded up
    (ViT-B 4, Swin-B 6, ConvNeXt-B 9); for easy tasks (``small``) earlier stages are fully
    trained and the last stage trains 1; for hard ones (``large``) earlier stages are frozen and
    the last stage is fully trained.
    """
    sizes = _stage_sizes(layer_map)
    if len(sizes) == 1:
        return [math.ceil(sizes[0] / 3)]
    easy = mode == "small"
    early = [n if easy else 0 for n in sizes[:-2]]
    return early + [math.ceil(sizes[-2] / 3), 1 if easy else sizes[-1]]


def _stage_sizes(layer_map: LayerMap) -> list[int]:
    """Largest homogeneous group size per stage (the number of blocks in that stage)."""
    sizes = [0] * layer_map.num_stages
    for layers in layer_map.groups().values():
        stage = layers[0].stage
        sizes[stage] = max(sizes[stage], len(layers))
    return sizes


def parse_topk(topk: int | str | Sequence[int] | None, layer_map: LayerMap, mode: str
               ) -> list[int]:
    """Top-k per stage from one number, ``"0,0,6,2"``, a list, or None (Table 7 default)."""
    if topk is None or topk == "":
        return default_topk(layer_map, mode)
    values = _topk_values(topk)
    stages = layer_map.num_stages
    if len(values) == 1:
        values = values * stages
    if len(values) != stages:
        raise PartialFTError(f"top-k {','.join(map(str, values))} has {len(values)} values but "
                             f"the model has {stages} stage(s); give one number or {stages}.")
    if any(v < 0 for v in values):
        raise PartialFTError(f"top-k {','.join(map(str, values))} has a negative value; each "
                             "must be 0 or more.")
    return values


def _topk_values(topk: int | str | Sequence[int]) -> list[int]:
    """Whole numbers from ``4``, ``"0,0,6,2"`` or ``[0, 0, 6, 2]``; anything else is an error."""
    items = topk.split(",") if isinstance(topk, str) else [topk] if isinstance(topk, int) \
        else topk
    try:
        values = [_whole(v) for v in items]
    except (TypeError, ValueError):
        raise PartialFTError(f"top-k {topk!r} is not a whole number or a comma-separated list "
                             "of them such as 4 or 0,0,6,2.") from None
    return values


def _whole(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value.strip()) if isinstance(value, str) else int(value)
