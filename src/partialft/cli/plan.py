"""`partialft plan`: what a method would train, without training."""

from __future__ import annotations

import argparse

from partialft.cli.common import (
    METHOD_NAMES,
    add_model_args,
    fmt_params,
    model_from_args,
    print_json,
)


def add_selection_args(p: argparse.ArgumentParser) -> None:
    """--method, --layers, --angles, --topk, --mode, --train-non-residual."""
    p.add_argument("--method", required=True, metavar="METHOD",
                   help=f"one of: {', '.join(METHOD_NAMES)}")
    p.add_argument("--layers", default=None, metavar="IDS",
                   help="comma-separated layer ids for --method layers")
    p.add_argument("--angles", default=None, metavar="FILE",
                   help="angles JSON from 'partialft angles' for --method fapft")
    p.add_argument("--topk", default=None, metavar="K",
                   help="layers per homogeneous group: one number or one per stage "
                   "(0,0,6,2); default: paper Table 7")
    p.add_argument("--mode", default=None, choices=["large", "small"],
                   help="fapft (required): train the largest-angle layers (hard tasks) or the "
                   "smallest (easy tasks)")
    p.add_argument("--train-non-residual", action="store_true",
                   help="also train patch embedding, tokens, downsampling and final norm")


def selection_kwargs(args: argparse.Namespace, model) -> dict:
    from partialft.core.angles import load_angles
    from partialft.core.layers import find_layers

    angles, mode = None, args.mode
    if args.angles:
        angles = load_angles(args.angles, find_layers(model, args.layer_spec))
    elif args.method == "fapft" and (args.topk is not None or mode is not None):
        # counting needs no angles: top-k layers of each group have the same size whichever
        # are picked, so stand-in angles (depth order) give the count; run() says so
        layer_map = find_layers(model, args.layer_spec)
        angles = {la.id: float(i) for i, la in enumerate(layer_map.layers)}
        mode = mode or "large"
    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
    return {"layers": layers, "angles": angles, "topk": args.topk, "mode": mode}


def non_residual_modules(names: list[str]) -> list[str]:
    """Parameter names -> their modules, in order: stem.0.weight, stem.0.bias -> stem.0."""
    modules: dict[str, None] = {}
    for name in names:
        modules[name.rsplit(".", 1)[0] if "." in name else name] = None
    return list(modules)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="show the layers and trainable parameters of a method",
                       description="Show which layers a method trains and how many parameters, "
                       "on the meta device (instant, no weights, no memory).")
    add_model_args(p)
    add_selection_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.methods import prepare

    model = model_from_args(args, meta=True)
    prepared = prepare(model, args.method, layer_spec=args.layer_spec,
                       train_non_residual=args.train_non_residual,
                       **selection_kwargs(args, model))
    summary = prepared.summary
    if args.json:
        print_json({"model": args.model, **prepared.selection.to_dict(), **summary.to_dict()})
        return 0
    sel = prepared.selection
    stand_in = sel.method == "fapft" and not args.angles
    print(f"{args.model}, method {sel.method}: trains {len(sel.layers)} of "
          f"{len(prepared.layer_map.layers)} layers + head"
          + (" (no --angles: which layers of a group is a stand-in, the count is exact)"
             if stand_in else ""))
    for layer_id in sel.layers:
        print(f"  {layer_id}")
    if args.train_non_residual:
        modules = non_residual_modules(prepared.layer_map.non_residual_params())
        print(f"  also trains the non-residual modules {', '.join(modules)} "
              f"({summary.groups.get('non_residual', {}).get('trainable', 0):,} parameters)")
    for group, counts in summary.groups.items():
        print(f"  {group:<16} {counts['trainable']:>14,} / {counts['total']:,}")
    print(f"trainable: {fmt_params(summary.trainable_params)} of "
          f"{fmt_params(summary.total_params)} ({100 * summary.fraction:.2f}%)")
    return 0
