"""`partialft fapft`: full fine-tuning -> angles -> selection -> partial fine-tuning."""

from __future__ import annotations

import argparse
from pathlib import Path

from partialft.cli.train import add_run_flags, check_run_flags, main_process
from partialft.training.config import BASELINE_KEYS, FIELDS, TrainConfig, config_inputs
from partialft.training.config_files import config_values
from partialft.training.config_flags import add_config_args, overrides_from_args
from partialft.training.outputs import check_claim


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fapft", help="the whole FAPFT pipeline with one command",
        description="Fine-tune fully (or reuse --reference), compute fine-tuned angles, select "
        "the top-k layers per homogeneous group (--topk, --mode), fine-tune only those with the "
        "same hyperparameters, and compare. Stages live under --out (full/, angles.json, "
        "fapft/, summary.json, comparison.md); rerunning skips completed stages.")
    p.add_argument("--reference", default=None, metavar="RUN_DIR|CHECKPOINT",
                   help="reuse this fully fine-tuned run dir or weights file instead of training")
    p.add_argument("--selector", default="angle",
                   choices=["angle", "probe-angle", "grad", "greedy"],
                   help="how to score layers: angles of a full run (default), of a short probe, "
                   "relative gradient norms, or SubTuning's greedy search (docs/selectors.md)")
    add_run_flags(p)
    # flags fapft does not use: the method is fapft, its angles come from the full run
    add_config_args(p, skip=("method", "angles", "layers", *BASELINE_KEYS))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.training.resume import resume_config
    from partialft.workflows.fapft import pipeline_record, run_fapft

    overrides = {**overrides_from_args(args), "method": "fapft"}
    given = config_values(args.config, overrides)
    out = Path(given.get("out") or FIELDS["out"].default)
    # a rerun continues the pipeline with its recorded settings (flags left out keep them)
    recorded = None if args.overwrite else pipeline_record(out)
    cfg = (resume_config(out, given, recorded, flag="a rerun") if recorded is not None
           else TrainConfig(**given))
    check_run_flags(args, cfg.out)
    inputs = [*config_inputs(cfg), args.reference, args.config]
    check_claim(cfg.out, "fapft", overwrite=args.overwrite, reuse=True, inputs=inputs)
    summary = run_fapft(cfg, reference=args.reference, progress=args.progress,
                        selector=args.selector, overwrite=args.overwrite,
                        inputs=inputs)
    if not main_process():  # under torchrun / accelerate launch, one process reports
        return 0
    print((out / "comparison.md").read_text(), end="")
    topk = summary["topk"]  # None: greedy's list of layers
    how = (f"top-k {','.join(map(str, topk))} per group, mode {summary['mode']}" if topk
           else f"chosen by the {args.selector} selector")
    decision = summary.get("mode_decision")
    if decision:
        print(f"mode {decision['mode']} ({decision['rule']}): {decision['reason']}")
    n = len(summary["fapft_layers"])
    print(f"FAPFT trained {n} layer{'' if n == 1 else 's'} ({how}); results in {out}")
    return 0
