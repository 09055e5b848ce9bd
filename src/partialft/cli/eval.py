"""`partialft eval RUN_DIR --dataset D`: clean accuracy, corruptions, ImageNet-A/-R/-C."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from partialft.cli.common import (
    add_base_mismatch_arg,
    add_threads_arg,
    apply_threads,
    positive_int,
    print_json,
)
from partialft.errors import PartialFTError

if TYPE_CHECKING:
    import torch.nn as nn
    from torch.utils.data import DataLoader, Dataset


FOLDER_SETS = ("imagenet-a", "imagenet-r", "imagenet-c")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy on clean, corrupted and OOD data",
                       description="Evaluate a run: clean top-1 accuracy on a dataset split, "
                       "optionally under ImageNet-C-style corruptions generated on the fly; "
                       "imagenet-a / imagenet-r through their 200-class ImageNet-1K logit "
                       "masks; imagenet-c from its folders with mCE vs AlexNet. Each result "
                       "is kept in RUN_DIR/eval.json under a key naming what was evaluated "
                       "(dataset, split, subset, corruptions, severities, seed), so other "
                       "evaluations never replace it.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run dir")
    p.add_argument("--dataset", required=True, metavar="D",
                   help="a partialft dataset name (e.g. the run's own), or imagenet-a, "
                   "imagenet-r, imagenet-c (folder layouts under --data-dir)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="dataset root (default: the run's data_dir for its own dataset)")
    p.add_argument("--split", default="test", choices=["val", "test"],
                   help="split of a partialft dataset to evaluate")
    p.add_argument("--corruptions", default=None, metavar="all|extra|every|LIST",
                   help="corruptions to apply: all (the 15 ImageNet-C benchmark ones), extra "
                   "(the 4 held-out ones), every (19), or comma-separated names")
    p.add_argument("--severities", default="1-5", metavar="1-5",
                   help="corruption severities: a range (1-5) or a list (1,3,5)")
    p.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                   help="evaluate only the first N images (quick checks)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="evaluation batch size")
    add_threads_arg(p)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--device", default=None,
                   help="device (default: cuda if available, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random corruptions")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_base_mismatch_arg(p)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar over the corruption passes")
    p.set_defaults(func=run)


def eval_preprocess(model: nn.Module, run_cfg: dict[str, Any], device: str) -> nn.Module:
    """The trainer's evaluation pipeline with the preprocessing the run recorded in config.yaml
    (img_size, crop_pct, interpolation, mean, std; the model's own where a run predates them):
    raw batch -> normalized model input (no augmentation)."""
    from timm.data import resolve_data_config

    from partialft.data import PREPROCESS, AugmentConfig, BatchAugment, resolve_preprocess

    dcfg = resolve_data_config({}, model=model)
    pre = resolve_preprocess(model, **{k: run_cfg.get(k) for k in PREPROCESS})
    size = run_cfg.get("img_size") or dcfg["input_size"][-1]
    return BatchAugment(size, dcfg["input_size"][0], pre["mean"], pre["std"], train=False,
                        cfg=AugmentConfig(), crop_pct=pre["crop_pct"],
                        interpolation=pre["interpolation"]).to(device)


def _dataset(args: argparse.Namespace, cfg: dict[str, Any], num_classes: int) -> Dataset:
    from partialft.training.runs import run_datasets

    if args.dataset == cfg.get("dataset") and args.data_dir is None:
        return run_datasets(args.run_dir, args.split)
    from partialft.data import build_datasets

    preprocess = {k: cfg[k] for k in ("crop_pct", "interpolation") if cfg.get(k) is not None}
    data = build_datasets(args.dataset, data_dir=args.data_dir,
                          img_size=cfg.get("img_size") or 224, download=False, **preprocess)
    if data.num_classes != num_classes:
        raise PartialFTError(f"dataset {args.dataset} has {data.num_classes} classes but the "
                             f"run's model predicts {num_classes}; evaluate on the run's task.")
    return getattr(data, args.split)


def _first(data: Dataset, n: int | None) -> Dataset:
    from torch.utils.data import Subset

    return Subset(data, range(min(n, len(data)))) if n else data


def load_model(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], str, str]:
    """The run's model and summary, its identity and the device, read under a shared lock (a
    training of the same dir cannot replace them half-way)."""
    import torch

    from partialft.analysis.evaluate import LOCK_WAIT_S, run_identity
    from partialft.training.locks import acquire
    from partialft.training.runs import load_run_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with acquire(args.run_dir, shared=True, wait=LOCK_WAIT_S,
                 advice="wait for it to finish, then evaluate again."):
        identity = run_identity(args.run_dir)
        model, summary = load_run_model(args.run_dir, device,
                                        allow_base_mismatch=args.allow_base_mismatch)
    return model, summary, identity, device


def checked_loader(data: Dataset, batch_size: int, workers: int, run_cfg: dict[str, Any],
                   device: str) -> DataLoader:
    """The evaluation loader, once a batch (``batch_size`` images, at most the whole split, at
    the run's image size) is known to fit the memory free on ``device``."""
    from torch.utils.data import DataLoader

    from partialft.utils.limits import check_batch_memory

    if len(data) and isinstance(run_cfg.get("img_size"), int):
        check_batch_memory(min(batch_size, len(data)), run_cfg["img_size"], device=device,
                           flags="`batch_size`")
    return DataLoader(data, batch_size=batch_size, num_workers=workers)


def evaluate_run(args: argparse.Namespace, model: nn.Module, summary: dict[str, Any],
                 device: str) -> dict[str, Any]:
    """Run the evaluation the arguments ask for and return its result."""
    from partialft.analysis import evaluate as ev
    from partialft.data.corruptions import parse_corruptions, parse_severities
    from partialft.training.runs import read_config

    sev = parse_severities(args.severities)
    names = parse_corruptions(args.corruptions) if args.corruptions else None
    common = {"device": device, "batch_size": args.batch_size, "num_workers": args.workers}
    if args.dataset in FOLDER_SETS:
        if args.max_images:
            raise PartialFTError(f"--max-images applies to partialft datasets, not "
                                 f"{args.dataset}; evaluate its whole folder.")
        if args.data_dir is None:
            raise PartialFTError(f"--dataset {args.dataset} needs --data-dir pointing at its "
                                 "root folder.")
        if args.dataset == "imagenet-c":
            return ev.imagenet_c_eval(model, args.data_dir, names, sev, **common)
        return ev.imagenet_ar_eval(model, args.data_dir, args.dataset, **common)
    cfg = read_config(args.run_dir)
    data = _first(_dataset(args, cfg, int(summary.get("num_classes") or 0)), args.max_images)
    loader = checked_loader(data, args.batch_size, args.workers, cfg, device)
    pre = eval_preprocess(model, cfg, device)
    result: dict[str, Any] = {"split": args.split, "images": len(data),
                              "clean_acc": ev.accuracy(model, loader, pre, device)}
    if names:
        result.update(ev.corruption_eval(model, loader, names, sev, pre, device, args.seed,
                                         clean_acc=result["clean_acc"],
                                         progress=args.progress))
    return result


def run(args: argparse.Namespace) -> int:
    if not Path(args.run_dir).is_dir():
        raise PartialFTError(f"run dir {args.run_dir} does not exist.")
    from partialft.analysis.evaluate import eval_key, save_eval

    apply_threads(args)

    model, summary, identity, device = load_model(args)
    result = evaluate_run(args, model, summary, device)
    split = "test" if args.dataset in FOLDER_SETS else args.split
    spec = {"dataset": args.dataset, "split": split, "max_images": args.max_images,
            "corruptions": args.corruptions, "severities": args.severities if (
                args.corruptions or args.dataset == "imagenet-c") else None,
            "seed": args.seed if args.corruptions else None}
    key = eval_key(**spec)
    # under the run dir's lock, refused if the run was replaced while it was evaluated
    save_eval(args.run_dir, key, {"spec": spec, **result}, identity=identity)
    if args.json:
        print_json({key: result})
        return 0
    _print(key, result)
    print(f"wrote {Path(args.run_dir) / 'eval.json'} [{key}]")
    return 0


def _print(key: str, result: dict[str, Any]) -> None:
    for metric in ("clean_acc", "acc"):
        if metric in result:
            print(f"{key}: top-1 accuracy {result[metric]:.2f}%")
    for name, by_sev in result.get("errors", {}).items():
        cells = "  ".join(f"s{s} {e:6.2f}" for s, e in by_sev.items())
        print(f"  {name:<18} error % {cells}")
    if "mean_corruption_error" in result:
        print(f"mean corruption error (not normalised): {result['mean_corruption_error']:.2f}%")
    if "relative_corruption_error" in result:
        print(f"relative corruption error (mean corruption error minus this run's clean "
              f"error): {result['relative_corruption_error']:.2f} points")
    mce = (result.get("mce_vs_alexnet") or {}).get("mce")
    if mce is not None:
        print(f"mCE (ImageNet-C protocol, normalised by AlexNet, Hendrycks & Dietterich 2019): "
              f"{mce:.2f}%")
