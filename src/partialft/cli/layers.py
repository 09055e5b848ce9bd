"""`partialft layers MODEL`: residual layers, homogeneous groups and parameter counts."""

from __future__ import annotations

import argparse

from partialft.cli.common import add_model_args, fmt_params, model_from_args, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list residual layers and homogeneous groups",
                       description="List the residual layers (id, kind, stage, group, "
                       "parameters) and homogeneous groups of a model, built on the meta "
                       "device: no weights are loaded or downloaded.")
    add_model_args(p, positional=True)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.core.layers import find_layers

    layer_map = find_layers(model_from_args(args, meta=True), args.layer_spec)
    if args.json:
        print_json({"model": args.model, **layer_map.to_dict()})
        return 0
    print(f"{args.model}: family {layer_map.family}, {len(layer_map.layers)} residual layers, "
          f"{layer_map.num_stages} stage(s), {fmt_params(layer_map.total_params)} parameters")
    # columns as wide as their longest entry (ids, kinds and groups vary by family)
    wid = max([34, *(len(la.id) for la in layer_map.layers)])
    wkind = max([4, *(len(la.kind) for la in layer_map.layers)])
    wgroup = max([16, *(len(la.group) for la in layer_map.layers)])
    print(f"{'layer id':<{wid}} {'kind':<{wkind}} {'stage':>5} {'index':>5} "
          f"{'group':<{wgroup}} {'params':>12}")
    for la in layer_map.layers:
        print(f"{la.id:<{wid}} {la.kind:<{wkind}} {la.stage:>5} {la.index:>5} "
              f"{la.group:<{wgroup}} {la.num_params:>12,}")
    print("\nhomogeneous groups:")
    for group, layers in layer_map.groups().items():
        sizes = sorted({la.num_params for la in layers})
        each = f"x {sizes[0]:,}" if len(sizes) == 1 else f"of {sizes[0]:,}-{sizes[-1]:,}"
        print(f"  {group:<{wgroup}} {len(layers):>3} layers {each} params")
    print(f"head: {fmt_params(layer_map.count(layer_map.head_params))}; non-residual (frozen by "
          f"default): {fmt_params(layer_map.count(layer_map.non_residual_params()))}")
    return 0
