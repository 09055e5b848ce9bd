"""`partialft select`: score layers with a selector (or compare selectors end to end)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from partialft.cli.common import positive_int
from partialft.errors import PartialFTError
from partialft.training.config import config_inputs
from partialft.training.config_files import load_config
from partialft.training.config_flags import add_config_args, overrides_from_args

SELECTOR_NAMES = ("angle", "probe-angle", "grad", "greedy")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select", help="score layers with a selector (angle, probe-angle, grad, greedy)",
        description="Run one layer selector on the model and data of a training config and "
        "write --out/scores.json (the angles-file format: {\"angles\": {layer: score}, "
        "\"selector\": ..., \"cost\": ...}) and --out/selection.json (the layers FAPFT's top-k "
        "per group picks, or greedy's list). With --compare, run full fine-tuning, every "
        "listed selector and its partial runs, and write comparison.md (see docs/selectors.md).")
    p.add_argument("--selector", default="grad", choices=SELECTOR_NAMES,
                   help="which selector to run (default grad)")
    p.add_argument("--compare", default=None, metavar="NAMES",
                   help="comma-separated selectors to compare end to end, e.g. "
                   "angle,probe-angle,grad,greedy")
    p.add_argument("--mode", dest="select_mode", default="auto",
                   choices=["auto", "probe", "large", "small"],
                   help="train the largest (hard task) or smallest (easy) scores; auto trains a "
                   "pilot of each (--pilot-fraction of the schedule) and keeps the better "
                   "on the validation split; probe: partialft's linear-probe threshold rule "
                   "(default auto)")
    p.add_argument("--reference", default=None, metavar="RUN_DIR",
                   help="angle: a finished full fine-tuning run dir instead of training one")
    p.add_argument("--fraction", type=float, default=0.2,
                   help="probe-angle: share of the full schedule's steps to train (default 0.2)")
    p.add_argument("--batches", type=positive_int, default=4,
                   help="grad: batches to average the relative gradient norms over (default 4)")
    p.add_argument("--no-fit-head", dest="fit_head", action="store_false",
                   help="grad: measure gradients through the random new head (default: fit it "
                   "by a linear probe first)")
    p.add_argument("--greedy-steps", type=positive_int, default=None,
                   help="greedy: optimizer steps per candidate training (default one epoch)")
    p.add_argument("--epsilon", type=float, default=0.5,
                   help="greedy: stop when the best val-accuracy gain (points) is below this")
    p.add_argument("--max-layers", type=positive_int, default=4,
                   help="greedy: most units to add (default 4)")
    p.add_argument("--unit", default="layer", choices=["layer", "block"],
                   help="greedy: add single layers or whole blocks (default layer)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_config_args(p, skip=("method", "angles", "layers", "mode", "max_steps"))
    p.set_defaults(func=run)


def selector_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per-selector keyword options from the flags."""
    return {"angle": {"reference": args.reference},
            "probe-angle": {"fraction": args.fraction},
            "grad": {"batches": args.batches, "fit_head": args.fit_head},
            "greedy": {"steps": args.greedy_steps, "epsilon": args.epsilon,
                       "max_layers": args.max_layers, "unit": args.unit}}


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from partialft.training.reruns import finish, open_output

    cfg = load_config(getattr(args, "config", None), overrides_from_args(args))
    if not math.isfinite(args.epsilon) or args.epsilon < 0:
        raise PartialFTError(f"--epsilon {args.epsilon} is not valid; use a finite number of "
                             "accuracy points >= 0, such as 0.5.")
    if not (math.isfinite(args.fraction) and 0 < args.fraction <= 1):
        raise PartialFTError(f"--fraction {args.fraction} is not valid; use a share of the "
                             "schedule in (0, 1], such as 0.2.")
    if args.reference is not None:  # read, never created: checked before --out is opened
        from partialft.selectors.scores import check_reference

        check_reference(args.reference, cfg)
    inputs = [*config_inputs(cfg), args.reference, getattr(args, "config", None)]
    # a select killed half-way is rerun by the same command: --compare reuses every finished
    # training and resumes the interrupted one; a single selector runs again
    from partialft.training.resume import RUNTIME_ONLY

    recipe = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUNTIME_ONLY}
    settings = {"config": recipe, "selector": args.selector,
                "compare": args.compare, "mode": args.select_mode,
                "options": selector_options(args)}
    with open_output(cfg.out, "select", settings, overwrite=args.overwrite,
                     inputs=inputs) as folder:
        code = _compare(args, cfg) if args.compare else _select(args, cfg)
        finish(folder)
    return code


def _select(args: argparse.Namespace, cfg) -> int:
    from partialft.core.layers import find_layers
    from partialft.selectors.run import run_selector
    from partialft.selectors.task import load_task
    from partialft.utils.io import atomic_write_json

    out = Path(cfg.out)
    result = run_selector(args.selector, cfg, out, **selector_options(args)[args.selector])
    task = load_task(cfg)
    layer_map = find_layers(task.model(), cfg.layer_spec)
    mode, reason, decision = args.select_mode, "given", None
    if mode in ("auto", "probe") and result.scores is not None:
        decision = _decide_mode(cfg, task, out, mode, {
            m: result.choose(layer_map, cfg.topk, m) for m in ("large", "small")})
        mode, reason = decision["mode"], decision["reason"]
        result.cost["mode_s"] = decision["cost"]["wall_s"]
    atomic_write_json(out / "scores.json", {**result.to_dict(), "model": cfg.model})
    layers = result.choose(layer_map, cfg.topk, mode)
    atomic_write_json(out / "selection.json", {"selector": args.selector, "layers": layers,
                                               "topk": result.topk_used(layer_map, cfg.topk,
                                                                        mode),
                                               "mode": mode, "mode_reason": reason,
                                               "mode_decision": decision})
    pilot = (f" (or finish the chosen pilot, which trains them: 'partialft train --resume "
             f"--out {decision['start_from']}')" if decision and "start_from" in decision else "")
    print(f"{args.selector}: {len(layers)} layers ({mode}: {reason}); "
          f"{result.cost['wall_s']:.1f} s; train them with 'partialft train --method layers "
          f"--layers {','.join(layers) or '-'}'{pilot}; scores in {out / 'scores.json'}")
    return 0


def _decide_mode(cfg, task, out: Path, how: str, layers_by_mode: dict[str, list[str]]
                 ) -> dict[str, Any]:
    """--mode auto (pilot runs in OUT/pilot-MODE/) or probe (the linear-probe rule): the record."""
    import time

    from partialft.selectors.auto import choose_mode, resolve_probe_mode

    if how == "probe":
        start = time.perf_counter()
        mode, reason, _ = resolve_probe_mode(cfg, task)
        return {"mode": mode, "rule": "linear probe", "reason": reason,
                "cost": {"wall_s": round(time.perf_counter() - start, 3)}}
    return choose_mode(cfg, out, fraction=cfg.pilot_fraction,
                       layers_by_mode=layers_by_mode, progress=False).to_dict()


def _compare(args: argparse.Namespace, cfg) -> int:
    from partialft.selectors.compare import compare_selectors

    names = [s.strip() for s in args.compare.split(",") if s.strip()]
    bad = [s for s in names if s not in SELECTOR_NAMES]
    if bad or not names:
        raise PartialFTError(f"--compare {args.compare!r} names unknown selector(s); use a "
                             f"comma-separated subset of {','.join(SELECTOR_NAMES)}.")
    summary = compare_selectors(cfg, cfg.out, names, selector_options(args), topk=cfg.topk)
    print((Path(cfg.out) / "comparison.md").read_text(), end="")
    return 0 if summary else 1
