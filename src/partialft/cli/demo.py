"""`partialft demo`: the whole method offline on a CPU in minutes (the README's main job)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from partialft.cli.common import add_threads_arg, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the whole method offline on a CPU in minutes",
        description="Fine-tune the bundled backbone (pretrained on synthetic fractals, no "
        "download) on scikit-learn's digits six ways: from scratch, linear probe, full "
        "fine-tuning, ATTN-only, FFN-only and FAPFT (angles from the full run; smallest angles "
        "and the paper's default top-k, as for an easy task). Prints a table and writes run "
        "dirs, report.md and figures under --out. Rerunning resumes where it stopped.")
    p.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"],
                   help="digits (bundled with scikit-learn) or fashion-mnist (Debian package "
                   "dataset-fashion-mnist, or a download)")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="where to write")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs of every run (default: the recipe's, from the shipped config "
                   "digits_demo: 'partialft configs digits_demo' prints it)")
    p.add_argument("--model", default="partialft_vit_tiny",
                   help="backbone (default: the bundled one)")
    p.add_argument("--max-per-split", type=positive_int, default=None, metavar="N",
                   help="use only N images per split (a quicker, rougher demo)")
    p.add_argument("--overwrite", action="store_true", help="start again in an existing --out")
    add_threads_arg(p)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.training.rundir import RunDir
    from partialft.workflows.demo import demo_config, run_demo, table

    out = Path(args.out)
    start = time.perf_counter()
    cfg = demo_config(out, args.dataset, args.model, args.epochs, args.max_per_split,
                      threads=args.threads)
    with RunDir(out, kind="demo", overwrite=args.overwrite, resume=True,
                settings={"dataset": args.dataset, "model": args.model, "epochs": cfg.epochs,
                          "max_per_split": args.max_per_split}):
        summaries = run_demo(cfg, progress=args.progress)
    print()
    print(table(summaries), end="")
    print(f"\ndone in {time.perf_counter() - start:.0f} s. Table: {out / 'demo.md'}; report and "
          f"figures: {out / 'report'}; run dirs: {out}/<run>.")
    return 0
