"""`partialft report RUN_DIR... --out DIR`: Markdown tables, JSON and figures from runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from partialft.cli.common import print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables and figures from run dirs",
                       description="Write report.md (paper Tables 1-4 style: accuracy as mean ± "
                       "std over seeds, trainable parameters), report.json and the figures "
                       "the inputs have data for: accuracy vs parameters (Fig. 1), manual "
                       "strategies vs full (Fig. 3), angle-rank heatmaps (Fig. 4), top-k x "
                       "largest/smallest (Fig. 6).")
    p.add_argument("inputs", nargs="+", metavar="RUN_DIR|ANGLES.json",
                   help="run dirs (summary.json, optional angles.json and eval.json) and/or "
                   "angles files from 'partialft angles --out'")
    p.add_argument("--out", default="report", metavar="DIR",
                   help="output folder (default: ./report)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--json", action="store_true", help="print report.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.analysis.report import write_report

    report = write_report(args.inputs, args.out, overwrite=args.overwrite)
    if args.json:
        print_json(report)
        return 0
    out = Path(args.out)
    print((out / "report.md").read_text(), end="")
    for name, why in report["skipped"].items():
        print(f"skipped {name}: {why}")
    print(f"wrote {out / 'report.md'}, {out / 'report.json'} and {len(report['figures'])} "
          "figure(s)")
    return 0
