"""The ``partialft`` command: a thin layer of verbs over the library.

Each verb lives in :mod:`partialft.cli` as a module with ``add_parser(subparsers)`` that
registers its arguments and sets ``func``. User mistakes (:class:`PartialFTError`) are printed as
one line on stderr with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from partialft.errors import PartialFTError, user_message

# Verb modules in the order `partialft --help` lists them.
COMMANDS = (
    "demo", "configs", "methods", "layers", "angles", "plan", "train", "fapft", "select", "search",
    "soup",
    "eval", "report", "export", "bench", "multitask", "pretrain",
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'partialft VERB: error: ... (see --help)', exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help').\n")
        raise SystemExit(2)


def build_parser() -> Parser:
    parser = Parser(
        prog="partialft",
        description="Partial fine-tuning of pretrained vision models: find residual layers, "
        "compute fine-tuned angles, select layers (FAPFT), train, soup, evaluate and report.",
    )
    from partialft import __version__

    parser.add_argument("--version", action="version", version=f"partialft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"partialft.cli.{name.replace('-', '_')}").add_parser(sub)
    return parser


# flags of partialft 0.1.0 that have one name now (the library's keyword, the config's key)
RENAMED_FLAGS = {"--lora-rank": "--rank", "--lora-alpha": "--alpha",
                 "--lora-targets": "--targets", "--adapter-dim": "--dim",
                 "--vpt-tokens": "--tokens"}


def renamed_flag(argv: Sequence[str]) -> str | None:
    """One sentence for a flag of an older partialft, naming today's spelling."""
    for arg in argv:
        old = arg.split("=", 1)[0]
        if old in RENAMED_FLAGS:
            return (f"{old} is now called {RENAMED_FLAGS[old]} (the same name as the "
                    "library's keyword and the config's key); rename it.")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    # where Python has no fcntl, filelock locks with marker files and warns at import (from
    # whichever library imports it first); partialft's locks are built for that (locks.py)
    warnings.filterwarnings("ignore", message="only soft file lock is available")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    renamed = renamed_flag(argv)
    if renamed:
        sys.stderr.write(f"partialft: error: {renamed}\n")
        return 2
    args = parser.parse_args(argv)
    try:
        from partialft.cli.common import check_common_args

        check_common_args(args)  # threads, workers, device, sizes: before any work
        return int(args.func(args) or 0)
    except PartialFTError as exc:
        sys.stderr.write(f"partialft {args.command}: error: {user_message(exc)}\n")
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        sys.stderr.write(f"partialft {args.command}: interrupted.\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
