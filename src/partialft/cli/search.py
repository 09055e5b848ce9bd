"""`partialft search`: an Optuna search over FAPFT's mode, top-k per group and learning rate."""

from __future__ import annotations

import argparse

from partialft.training.config_flags import add_config_args, overrides_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="search FAPFT's mode, top-k and learning rate with Optuna",
        description="Search FAPFT's choices on a training config: every trial is a real "
        "training run (--out/trial-NNN/), pruned early from its per-epoch validation accuracy "
        "(median pruner) and scored by its best validation accuracy (the test split chooses "
        "nothing). Writes --out/search.md (every trial), search.json, search.png (accuracy vs "
        "trainable parameters) and keeps the study in --out/search.db, so rerunning a killed "
        "search continues it. Needs pip install 'partialft[search]' (docs/search.md).")
    p.add_argument("--space", default=None, metavar="FILE",
                   help="YAML search space with keys mode, topk, lr (default: both modes, "
                   "top-k 1-6, lr 3e-4..3e-3)")
    p.add_argument("--search-modes", default=None, metavar="MODES",
                   help="modes to try, e.g. large,small")
    p.add_argument("--search-topk", default=None, metavar="LOW-HIGH",
                   help="per-group top-k range, e.g. 1-6")
    p.add_argument("--search-lr", default=None, metavar="LOW:HIGH",
                   help="learning-rate range (log-uniform), e.g. 3e-4:3e-3")
    p.add_argument("--n-trials", type=int, default=20,
                   help="stop when this many trials are complete or pruned (default 20)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds after which this process starts no new trial")
    p.add_argument("--search-seed", dest="search_seed", type=int, default=0,
                   help="seed of the TPE sampler (default 0)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL shared by several workers (sqlite:///PATH, "
                   "postgresql://..., mysql://..., journal:PATH); default --out/search.db")
    p.add_argument("--study-name", default="partialft-search",
                   help="study name in the storage (default partialft-search)")
    p.add_argument("--reference", default=None, metavar="RUN_DIR",
                   help="a finished full fine-tuning run dir to take the angles from "
                   "(default: train one in --out/full)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False,
                   help="show progress bars")
    add_config_args(p, skip=("method", "layers", "mode", "topk", "max_steps"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from partialft.errors import PartialFTError
    from partialft.search import load_space, run_search, space_from_flags
    from partialft.training.config_files import load_config

    flags = (args.search_modes, args.search_topk, args.search_lr)
    if args.space is not None and any(f is not None for f in flags):
        raise PartialFTError("--space and the --search-* flags both describe the space; give "
                             "one of them.")
    if args.n_trials < 1:
        raise PartialFTError(f"--n-trials {args.n_trials} is not valid; use a whole number of "
                             "at least 1, such as 12.")
    space = load_space(args.space) if args.space else space_from_flags(*flags)
    overrides = {**overrides_from_args(args), "method": "fapft", "mode": "large"}
    cfg = load_config(getattr(args, "config", None), overrides)
    record = run_search(cfg, cfg.out, space=space, n_trials=args.n_trials,
                        timeout=args.timeout, seed=args.search_seed, storage=args.storage,
                        study_name=args.study_name, angles=cfg.angles,
                        reference=args.reference, overwrite=args.overwrite,
                        progress=args.progress)
    best = record["best"]
    print(f"{record['n_trials']} trials ({record['pruned']} pruned); results in "
          f"{cfg.out}/search.md")
    if best is not None:
        print(f"best: trial {best['trial']} (mode {best['mode']}, top-k {best['topk']}, lr "
              f"{best['lr']:.3g}): val acc {best['val_acc']:.2f}%, test acc "
              f"{best['test_acc'] if best['test_acc'] is None else round(best['test_acc'], 2)}"
              f"%, {best['trainable_params']:,} trainable params; run dir {best['run_dir']}")
    return 0
