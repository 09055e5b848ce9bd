"""`partialft pretrain`: pretrain a backbone on fractal categories rendered on the fly."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from partialft.cli.common import positive_int, print_json
from partialft.cli.train import check_run_flags

HELP = {
    "out": "run dir to write (weights, metrics.jsonl, MODEL_CARD.md, resume state)",
    "model": "timm model name to pretrain (its input size sets the image size)",
    "categories": "number of fractal (IFS) categories in the corpus",
    "seed": "seed of the categories, the instances and the initialisation",
    "steps": "optimizer steps of the whole schedule",
    "batch_size": "images per step (per process)",
    "lr": "peak learning rate (AdamW)",
    "min_lr": "final learning rate of the cosine decay",
    "weight_decay": "AdamW weight decay",
    "warmup_steps": "linear warm-up steps",
    "label_smoothing": "label smoothing",
    "grad_clip": "clip the gradient norm to this (0 = off)",
    "val_per_category": "held-out generated instances per category for validation",
    "eval_every": "validate every N steps",
    "checkpoint_every": "write a resume point every N steps",
    "log_every": "append a metrics line every N steps",
    "amp": "mixed precision through accelerate: no, bf16 or fp16",
    "chains": "chaos-game chains per image (more: denser renders, slower)",
    "iters": "chaos-game steps per chain",
    "max_steps": "stop after this step (continue later with --resume)",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from partialft.training.pretrain_config import PretrainConfig

    p = sub.add_parser("pretrain", help="pretrain a backbone on synthetic fractals (FractalDB)",
                       description="Pretrain a timm model (default: the bundled "
                       "partialft_vit_tiny) to classify FractalDB-style IFS categories rendered "
                       "on the fly; writes float16 weights and a model card. See "
                       "docs/backbone.md.")
    for f in dataclasses.fields(PretrainConfig):
        if f.name == "command":
            continue
        kind = type(f.default) if f.default is not None else int
        kind = positive_int if kind is int and f.name not in ("seed", "warmup_steps") else kind
        # absent unless given, so a --resume can tell a flag left out from one given
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=argparse.SUPPRESS,
                       help=f"{HELP[f.name]} (default: {f.default})")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last resume point with its recorded "
                   "config: flags left out keep the recorded values, a different value is "
                   "refused (--max-steps and --checkpoint-every may change)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run dir")
    p.add_argument("--no-progress", action="store_true", help="print no progress lines")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):  # -> PretrainConfig
    """The run's config: defaults < flags; with --resume the recorded config.json < flags,
    where a recipe flag that differs from the record is refused (training.pretrain)."""
    from partialft.training.pretrain import check_same_run, recorded
    from partialft.training.pretrain_config import RUNTIME, PretrainConfig

    given = {n: getattr(args, n) for n in _names() if hasattr(args, n)}
    out = given.get("out", PretrainConfig.out)
    saved = recorded(out) if args.resume and not args.overwrite else None
    if saved is None:
        return PretrainConfig(**given, command=command_line(args))
    runtime = {k: v for k, v in given.items() if k in RUNTIME}
    check_same_run(PretrainConfig(**{**saved, **given, "max_steps": given.get("max_steps")}))
    return PretrainConfig(**{**saved, "max_steps": None, **runtime})


def _names() -> list[str]:
    from partialft.training.pretrain_config import PretrainConfig

    return [f.name for f in dataclasses.fields(PretrainConfig) if f.name != "command"]


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run: every flag that differs from its default."""
    from partialft.training.pretrain_config import PretrainConfig

    defaults = PretrainConfig()
    words = ["partialft", "pretrain"]
    for name in _names():
        value = getattr(args, name, getattr(defaults, name))
        if name == "max_steps":  # an interruption, not part of the recipe
            continue
        if name == "out" or value != getattr(defaults, name):
            words += [f"--{name.replace('_', '-')}", str(value)]
    if args.threads:
        words += ["--threads", str(args.threads)]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    import torch

    from partialft.training.pretrain import pretrain
    from partialft.training.pretrain_config import PretrainConfig

    check_run_flags(args, getattr(args, "out", PretrainConfig.out))
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    summary = pretrain(cfg, overwrite=args.overwrite, resume=args.resume,
                       progress=not args.no_progress)
    if summary is None:
        print(f"stopped at step {cfg.max_steps} of {cfg.steps}; continue with "
              f"'partialft pretrain --out {cfg.out} --resume'.")
        return 0
    if args.json:
        print_json(summary)
    else:
        print(f"{summary['model']}: {summary['val_acc']}% on {summary['val_images']} held-out "
              f"fractal images after {summary['steps']} steps, {summary['wall_s']:.0f} s on "
              f"{summary['device']}; weights and MODEL_CARD.md in {cfg.out}")
    return 0
