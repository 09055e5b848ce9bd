"""`partialft train`: one run of any method into a run dir."""

from __future__ import annotations

import argparse

from partialft.training.config import FIELDS, TrainConfig
from partialft.training.config_files import config_values
from partialft.training.config_flags import (
    add_config_args,
    check_method_flags,
    overrides_from_args,
)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """--config, --overwrite, --resume, --progress/--no-progress."""
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML config (see configs/); flags given here override it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run dir")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run dir from its last resume point")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar")


def check_run_flags(args: argparse.Namespace, out: str) -> None:
    """--resume and --overwrite exclude each other; --resume needs a run to continue."""
    from pathlib import Path

    from partialft.errors import PartialFTError
    from partialft.training.outputs import leftovers_only, read_marker

    if args.resume and args.overwrite:
        raise PartialFTError("--resume and --overwrite contradict each other; pass one.")
    # a run killed before its marker landed left only partialft's lock and temporary files:
    # resuming it starts the run
    if args.resume and read_marker(out) is None and not leftovers_only(Path(out)):
        what = "does not exist" if not Path(out).exists() else "holds no partialft run"
        raise PartialFTError(f"nothing to resume: {out} {what}; drop --resume to start a new "
                             "run there.")


def run_config(args: argparse.Namespace, skip_checks: bool = False):  # -> TrainConfig
    """The config of this invocation: defaults < --config < flags for a new run; with
    --resume the run's recorded config.yaml < --config < flags, where a given value that
    differs from the recorded one is refused (partialft.training.resume)."""
    from partialft.training.resume import recorded_config, resume_config

    flags = overrides_from_args(args)
    given = config_values(args.config, flags)
    out = given.get("out") or FIELDS["out"].default
    recorded = recorded_config(out) if args.resume and not args.overwrite else None
    if recorded is None:
        cfg = TrainConfig(**given)
    else:
        cfg = resume_config(out, given, recorded)
    if not skip_checks:
        check_method_flags(flags, cfg.method)
    return cfg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one run (any method) into a run dir",
        description="Train a model with one method (full, linear, attn, ffn, the paper's manual "
        "strategies, layers, fapft, or a PEFT baseline) using the same recipe for all: AdamW, "
        "per-step cosine with warm-up, label smoothing, optional mixup/cutmix, RandAugment, "
        "random erasing, EMA, mixed precision. Writes config.yaml, metrics.jsonl, summary.json "
        "and delta.safetensors (only the trained tensors) into --out. Multi-GPU: "
        "'accelerate launch -m partialft train ...'.")
    add_run_flags(p)
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.selectors.auto import train_auto
    from partialft.training.train import fmt_pct, train

    cfg = run_config(args)
    check_run_flags(args, cfg.out)
    inputs = [args.config] if args.config else []
    if cfg.mode in ("auto", "probe") and cfg.method == "fapft":  # a resume has its recorded mode
        summary, _ = train_auto(cfg, overwrite=args.overwrite, resume=args.resume,
                                progress=args.progress, inputs=inputs)
    else:
        summary = train(cfg, overwrite=args.overwrite, resume=args.resume,
                        progress=args.progress, inputs=inputs)
    if not main_process():  # under torchrun / accelerate launch, one process reports
        return 0
    if summary is None:
        print(f"stopped after {cfg.max_steps} steps; continue with "
              f"'partialft train --out {cfg.out} --resume' (it keeps the recorded settings).")
        return 0
    print(f"{summary['method']}: best val acc {fmt_pct(summary['best_acc'])}, test acc "
          f"{fmt_pct(summary['test_acc'])}, {summary['trainable_params']:,} trainable parameters, "
          f"{summary['wall_s']:.1f} s on {summary['device']}; run dir {cfg.out}")
    return 0


def main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (or the only process)."""
    import os

    return os.environ.get("RANK", "0") == "0"
