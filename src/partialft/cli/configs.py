"""`partialft configs [NAME]`: the configs that ship with partialft, or one of them."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("configs", help="list the shipped configs, or print one",
                       description="List the training configs that ship with partialft (the "
                       "paper's recipes and the demo's), each with the paper entry it "
                       "reproduces; with NAME, print that config (to copy and edit). Any verb "
                       "that takes --config accepts these names from any directory, e.g. "
                       "'partialft fapft --config cifar100_vit_b16'.")
    p.add_argument("name", nargs="?", metavar="NAME", help="a shipped config to print")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.errors import PartialFTError, suggest
    from partialft.training.config_files import shipped_configs

    shipped = shipped_configs()
    if args.name:
        name = args.name.removesuffix(".yaml")
        if name not in shipped:
            raise PartialFTError(f"no shipped config {args.name!r}{suggest(name, shipped)}; "
                                 f"valid: {', '.join(sorted(shipped))}.")
        print(shipped[name].read_text(), end="")
        return 0
    width = max(len(n) for n in shipped)
    for name in sorted(shipped):
        print(f"{name:<{width}}  {_title(shipped[name])}")
    return 0


def _title(path) -> str:
    """The first sentence of a config's header comment."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    return text.split(". ")[0].split(": paper")[0] if text else ""
