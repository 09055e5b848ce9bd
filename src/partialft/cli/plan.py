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
    p.add_argument("--method", default=None, metavar="METHOD",
                   help=f"one of: {', '.join(METHOD_NAMES)}")
    p.add_argument("--layers", default=None, metavar="IDS",
                   help="comma-separated layer ids for --method layers")
    p.add_argument("--angles", default=None, metavar="FILE",
                   help="angles JSON from 'partialft angles' for --method fapft")
    p.add_argument("--topk", default=None, metavar="K",
                   help="layers per homogeneous group: one number or one per stage "
                   "(0,0,6,2); default: paper Table 7")
    p.add_argument("--mode", default=None, choices=["large", "small", "auto", "probe"],
                   help="fapft: train the largest-angle layers (hard tasks) or the smallest "
                   "(easy tasks); auto and probe need data, so plan cannot resolve them")
    p.add_argument("--train-non-residual", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="also train patch embedding, tokens, downsampling and final norm")
    # the PEFT baselines' options: the same flags (and words) as `partialft train`
    from partialft.training.config import BASELINE_KEYS, FIELDS

    kinds = {"rank": int, "alpha": float, "dropout": float, "targets": str, "reduction": int,
             "dim": int, "tokens": int}
    for name in BASELINE_KEYS:
        p.add_argument(f"--{name}", type=kinds[name], default=None, metavar=name.upper(),
                       help=FIELDS[name].metadata["help"])


def selection_kwargs(args: argparse.Namespace, model) -> dict:
    from partialft.core.angles import load_angles
    from partialft.core.layers import find_layers
    from partialft.errors import PartialFTError

    if args.mode in ("auto", "probe"):
        raise PartialFTError(f"plan cannot resolve --mode {args.mode}: it needs data (pilot "
                             "runs or a linear probe); pass --mode large or small, or let "
                             "'partialft train' or 'partialft fapft' decide it.")

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
    add_model_args(p, required=False)
    add_selection_args(p)
    p.add_argument("--config", default=None, metavar="FILE",
                   help="take model, classes, method, top-k, mode and baseline options from a "
                   "training config (a file or a shipped name); flags override it")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def from_config(args: argparse.Namespace) -> None:
    """Fill the flags not given from --config, as `partialft train --config` would read it."""
    from partialft.data import known_classes
    from partialft.errors import PartialFTError
    from partialft.training.config import BASELINE_KEYS
    from partialft.training.config_files import load_config

    if args.config is not None:
        overrides = {k: getattr(args, k) for k in ("model", "method") if getattr(args, k)}
        cfg = load_config(args.config, {**overrides, "mode": args.mode or None} if args.mode
                          else overrides)
        # a config's fapft settings count only for fapft (the paper configs carry top-k for
        # every method); flags given stay and are checked against the method
        keys = ("model", "method", "layer_spec", "checkpoint", *BASELINE_KEYS) + (
            ("topk", "mode") if cfg.method == "fapft" else ())
        for key in keys:
            if getattr(args, key, None) is None:
                setattr(args, key, getattr(cfg, key))
        if args.train_non_residual is None:
            args.train_non_residual = cfg.train_non_residual
        args.num_classes = args.num_classes or cfg.num_classes or known_classes(cfg.dataset)
    if not args.model or not args.method:
        raise PartialFTError("plan needs --model and --method (or a --config that sets them).")
    args.train_non_residual = bool(args.train_non_residual)


def run(args: argparse.Namespace) -> int:
    from partialft.methods import check_method_options, prepare
    from partialft.training.config import BASELINE_KEYS

    from_config(args)
    # the rule partialft train and the library apply to the same options, before any model
    given = {k: getattr(args, k) for k in (*BASELINE_KEYS, "layers", "angles", "topk", "mode")}
    check_method_options(args.method, given)
    model = model_from_args(args, meta=True)
    baseline = {k: getattr(args, k) for k in BASELINE_KEYS}
    prepared = prepare(model, args.method, layer_spec=args.layer_spec,
                       train_non_residual=args.train_non_residual,
                       **baseline, **selection_kwargs(args, model))
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
