"""`partialft methods`: every method and the options it takes (one name each everywhere)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "methods", help="list the methods and the options each takes",
        description="List every method and its options. An option has one name everywhere: "
        "the keyword of partialft.prepare / get_partial_model (rank=4), the key of a training "
        "config (rank: 4) and the flag of train and plan (--rank 4). An option the chosen "
        "method does not take is an error.")
    p.add_argument("method", nargs="?", default=None, help="show only this method")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.cli.common import print_json
    from partialft.methods import all_methods, method_options

    names = [args.method] if args.method else all_methods()
    table = {name: method_options(name) for name in names}  # an unknown name is refused
    if args.json:
        print_json(table)
        return 0
    for name, options in table.items():
        print(name + ("" if options else "  (no options)"))
        for option, text in options.items():
            print(f"  --{option.replace('_', '-'):<10} {text}")
    return 0
