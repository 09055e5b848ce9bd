"""`partialft soup RUN_DIR... --out DIR [--greedy]`: uniform or greedy model soup of runs."""

from __future__ import annotations

import argparse
import os
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from partialft.cli.common import (
    add_base_mismatch_arg,
    add_threads_arg,
    apply_threads,
    fmt_params,
    non_negative_int,
    positive_int,
    print_json,
)
from partialft.errors import PartialFTError
from partialft.training.outputs import check_claim, read_marker, remove_marked

if TYPE_CHECKING:
    from partialft.analysis.soups import (
        Evaluator,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soup", help="average fine-tuned runs into a model soup",
                       description="Average runs fine-tuned from the same base (full or partial, "
                       "paper Sec. 3.3 / Table 3) into a new run dir. Uniform by default; "
                       "--greedy: ingredients ranked by the val accuracy of each ingredient's "
                       "final weights, each next one added only if the soup's val accuracy "
                       "strictly increases (the official Model Soups code's rule; the paper's "
                       "Algorithm 1 also keeps ties).")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="ingredient run dirs")
    p.add_argument("--out", required=True, metavar="DIR", help="run dir to write the soup to")
    p.add_argument("--greedy", action="store_true",
                   help="greedy soup (Wortsman et al.) instead of the uniform average")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-eval", action="store_true",
                   help="do not measure the soup's accuracy (uniform soups only)")
    add_threads_arg(p)
    p.add_argument("--device", default=None,
                   help="device for evaluation (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=positive_int, default=128,
                   help="evaluation batch size (default 128)")
    p.add_argument("--workers", type=non_negative_int, default=0,
                   help="data loader worker processes (default 0)")
    p.add_argument("--json", action="store_true", help="print the soup's summary as JSON")
    add_base_mismatch_arg(p)
    p.set_defaults(func=run)


def default_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def make_evaluator(run_dir: str, split: str, device: str, batch_size: int,
                   workers: int = 0, allow_base_mismatch: bool = False) -> Evaluator | None:
    """``state_dict -> accuracy (%)`` on a split of ``run_dir``'s dataset (its model structure);
    None when the run has no such split (no test/ folder, or val_fraction 0)."""
    import torch

    from partialft.analysis.evaluate import accuracy
    from partialft.cli.eval import checked_loader, eval_preprocess
    from partialft.training.checkpoints import apply_delta
    from partialft.training.runs import delta_info, read_config, run_datasets, structured_model

    meta = delta_info(run_dir)
    model = structured_model(meta["base"], meta.get("selection", {}),
                             allow_base_mismatch=allow_base_mismatch).to(device).eval()
    data = run_datasets(run_dir, split)
    if data is None or len(data) == 0:
        return None
    run_cfg = read_config(run_dir)
    loader = checked_loader(data, batch_size, workers, run_cfg, device)
    # img_size, crop_pct, interpolation, mean, std as the run recorded them (config.yaml)
    preprocess = eval_preprocess(model, run_cfg, device)

    def evaluate(state: dict[str, torch.Tensor]) -> float:
        apply_delta(model, state)
        return accuracy(model, loader, preprocess, device)

    return evaluate


def run(args: argparse.Namespace) -> int:
    from partialft.analysis.evaluate import LOCK_WAIT_S
    from partialft.training.locks import acquire

    apply_threads(args)
    if args.greedy and args.no_eval:
        raise PartialFTError("--greedy needs held-out accuracies; drop --no-eval.")
    _check_out(Path(args.out), args.runs, args.overwrite)
    with ExitStack() as held:
        # shared locks on the ingredients while they are read: a training cannot replace one
        # half-way (an old delta with a new summary); it waits or is refused meanwhile
        for r in args.runs:
            if Path(r).is_dir():
                held.enter_context(acquire(r, shared=True, wait=LOCK_WAIT_S, advice=(
                    "wait for it to finish, then make the soup again.")))
        return _soup(args)


def _soup(args: argparse.Namespace) -> int:
    from partialft.analysis.soups import (
        check_same_base,
        greedy_soup,
        load_ingredient,
        uniform_soup,
        )
    from partialft.training.runs import delta_info, is_run_dir, structured_model

    bad = [r for r in args.runs if not is_run_dir(r)]
    if bad:
        raise PartialFTError(f"{bad[0]} is not a finished run dir (summary.json and "
                             "delta.safetensors); pass run dirs written by 'partialft train'.")
    ingredients = [load_ingredient(r) for r in args.runs]
    check_same_base(ingredients)
    # the base in the ingredients' own structure: a PEFT baseline's deltas name the modules it
    # inserts (LoRA wraps the layers it adapts, so even the base weights are named differently)
    meta = delta_info(args.runs[0])
    base = structured_model(meta["base"], meta.get("selection", {}),
                            allow_base_mismatch=args.allow_base_mismatch).state_dict()
    device = default_device(args.device)
    accuracies: dict[str, Any] = {"val_acc": None, "test_acc": None}
    evaluate = None
    eval_args = (device, args.batch_size, args.workers, args.allow_base_mismatch)
    if not args.no_eval:
        evaluate = make_evaluator(args.runs[0], "val", *eval_args)
    if args.greedy and evaluate is None:
        raise PartialFTError(f"a greedy soup adds ingredients by validation accuracy, but "
                             f"{args.runs[0]} was trained without a validation split "
                             "(val_fraction 0); make a uniform soup or use runs with one.")
    if args.greedy:
        result = greedy_soup(base, ingredients, evaluate)
        accuracies["val_acc"] = result.val_acc
    else:
        result = uniform_soup(base, ingredients)
        if evaluate is not None:
            accuracies["val_acc"] = evaluate({**base, **result.delta})
    test = None if args.no_eval else make_evaluator(args.runs[0], "test", *eval_args)
    if test is not None:
        accuracies["test_acc"] = test({**base, **result.delta})
    out = _write_whole(Path(args.out), ingredients, result, accuracies, args.overwrite)
    return _print(args, out, result, ingredients, accuracies)


def _check_out(out: Path, runs: list[str], overwrite: bool) -> None:
    """Fail before any work: duplicate ingredients, or an --out that may not be written (after
    finishing what a soup killed between its two renames left)."""
    seen: dict[Path, str] = {}
    for run in runs:
        key = Path(run).resolve()
        if key in seen:
            raise PartialFTError(f"ingredient {run} is given twice (also as {seen[key]}); a "
                                 "soup averages different runs, so list each run once.")
        seen[key] = run
    _recover(out)
    if check_claim(out, "soup", overwrite=overwrite, inputs=runs) and (
            _old(out).exists() or _old(out).is_symlink()):
        raise PartialFTError(f"{_old(out)} exists and is not a soup partialft set aside; "
                             "partialft moves --out there while replacing it, so move that "
                             "folder away first.")


def _old(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def _recover(out: Path) -> None:
    """A soup killed between its renames (--out moved aside to ``.OUT.old``, the new soup not
    yet in place): put the old soup back, so the rerun replaces it as the killed one would
    have; killed after both renames: remove the old one. Only a marked soup dir is touched."""
    old = _old(out)
    if old.is_symlink() or not old.is_dir() or (read_marker(old) or {}).get("kind") != "soup":
        return
    if out.exists() or out.is_symlink():
        remove_marked(old)
    else:
        os.replace(old, out)


def _write_whole(out: Path, ingredients: list, result: Any, accuracies: dict[str, Any],
                 overwrite: bool) -> Path:
    """Write the soup into a hidden sibling dir, then rename it onto --out.

    A crash (even ``kill -9``) never leaves a half-written --out, and rerunning the same command
    completes the soup: it replaces the sibling a crashed attempt left behind.
    """
    from partialft.analysis.soups import (
        write_soup_run,
        )

    staging = out.parent / f".{out.name}.partial"
    write_soup_run(staging, ingredients, result, accuracies, overwrite=True)
    runs = [i.name for i in ingredients]
    if check_claim(out, "soup", overwrite=overwrite, inputs=runs):  # still ours to replace?
        old = _old(out)
        _recover(out)  # left by a crash after the two renames below
        os.replace(out, old)
        os.replace(staging, out)
        remove_marked(old)
    else:
        if out.is_dir():
            out.rmdir()  # empty (check_claim said so)
        os.replace(staging, out)
    return out


def _print(args: argparse.Namespace, out: Any, result: Any, ingredients: list,
           accuracies: dict[str, Any]) -> int:
    from partialft.analysis.soups import (
        soup_params,
        )

    params = soup_params(ingredients, result.used)
    if args.json:
        import json

        print_json(json.loads((out / "summary.json").read_text()))
        return 0
    print(f"{result.kind} soup of {len(result.used)} of {len(ingredients)} runs -> {out}")
    for step in result.history:
        mark = "kept" if step["kept"] else "rejected"
        print(f"  {mark:<8} {step['ingredient']}  val acc {step['val_acc']:.2f}%")
    for key in ("val_acc", "test_acc"):
        if accuracies.get(key) is not None:
            print(f"{key.replace('_', ' ')}: {accuracies[key]:.2f}%")
    print(f"trainable params (sum over ingredients, paper Table 3): "
          f"{fmt_params(params['trainable_params'])}")
    return 0
