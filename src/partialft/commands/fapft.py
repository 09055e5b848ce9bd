"""`partialft fapft`: full fine-tuning -> angles -> selection -> partial fine-tuning."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from partialft.commands.train import add_run_flags
from partialft.config import add_config_args, load_config, overrides_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fapft", help="the whole FAPFT pipeline with one command",
        description="Fine-tune fully (or reuse --reference), compute fine-tuned angles, select "
        "the top-k layers per homogeneous group (--topk, --mode), fine-tune only those with the "
        "same hyperparameters, and compare. Stages live under --out (full/, angles.json, "
        "fapft/, summary.json, comparison.md); rerunning skips completed stages.")
    p.add_argument("--reference", default=None, metavar="RUN_DIR|CHECKPOINT",
                   help="reuse this fully fine-tuned run dir or weights file instead of training")
    add_run_flags(p)
    add_config_args(p, skip=("method", "angles"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.fapft import run_fapft

    cfg = load_config(args.config, {**overrides_from_args(args), "method": "fapft"})
    out = Path(cfg.out)
    if args.overwrite and out.exists():
        shutil.rmtree(out)
    summary = run_fapft(cfg, reference=args.reference, progress=args.progress)
    print((out / "comparison.md").read_text(), end="")
    print(f"FAPFT trained {len(summary['fapft_layers'])} layers (top-k {summary['topk']}, "
          f"mode {summary['mode']}); results in {out}")
    return 0
