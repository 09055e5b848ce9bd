"""Compare selectors end to end: full fine-tuning, then each selector + its partial run.

Under ``out``: ``full/`` (the full fine-tuning run dir, also the reference angles),
``probe_mode.json`` (the mode of the selectors that run in one mode: greedy), and per selector
``NAME/scores.json`` + ``NAME/partial-MODE/`` run dirs; ``comparison.json`` and
``comparison.md`` hold the table. A score selector runs in both modes to the end, and the one
``--mode auto`` would keep at ``--pilot-fraction 1`` (better validation accuracy, the rule of
:func:`partialft.selectors.auto.rank`) is marked ``(auto)``. Every wall time is measured around the
whole call (model build, data, training, evaluation), the same way for every row.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from partialft.core.layers import find_layers
from partialft.selectors.probe import resolve_probe_mode
from partialft.selectors.run import run_selector
from partialft.selectors.task import SelectorResult, load_task
from partialft.training.config import TrainConfig
from partialft.utils.io import atomic_write_json, atomic_write_text


def timed_train(cfg: TrainConfig) -> tuple[dict[str, Any], float]:
    """Train (or reuse a finished) run; the wall seconds are stored beside it for reruns."""
    from partialft.training.train import train
    from partialft.utils.io import remove_stale_tmp_of

    stamp = Path(cfg.out) / "wall_s.json"
    done_before = (Path(cfg.out) / "summary.json").is_file()
    start = time.perf_counter()
    summary = train(cfg, resume=True, progress=False)
    if not stamp.is_file():
        # a comparison killed after the run finished, before (or in) this write: only it
        # writes here (under the select dir's lock), so its temporary file can go; the run's
        # own training time stands in for the whole call it no longer has to make
        remove_stale_tmp_of(stamp)
        wall = summary.get("wall_s", 0.0) if done_before else time.perf_counter() - start
        atomic_write_json(stamp, {"wall_s": round(wall, 3)})
    return summary, json.loads(stamp.read_text())["wall_s"]


def save_scores(path: Path, result: SelectorResult, **meta: Any) -> None:
    atomic_write_json(path, {**result.to_dict(), **meta})


def compare_selectors(cfg: TrainConfig, out: str | Path, selectors: list[str],
                      options: dict[str, dict[str, Any]] | None = None, topk: Any = None,
                      both_modes: bool = True) -> dict[str, Any]:
    """Full FT + each selector's partial run(s); returns and writes the comparison."""
    from partialft.core.angles import kendall_tau

    out = Path(out)
    options = options or {}
    full, full_s = timed_train(dataclasses.replace(cfg, method="full", out=str(out / "full")))
    reference = run_selector("angle", cfg, out / "angle", reference=str(out / "full"))
    task = load_task(cfg)
    probe, reason, probe_s = resolve_probe_mode(cfg, task)  # greedy's mode (--mode probe)
    atomic_write_json(out / "probe_mode.json", {"mode": probe, "reason": reason,
                                                 "wall_s": probe_s})
    layer_map = find_layers(task.model(), cfg.layer_spec)
    rows = [_row("full", full, full_s, 0.0, full_s, None, [], "-")]
    for name in selectors:
        result = (reference if name == "angle" else
                  run_selector(name, cfg, out / name, **options.get(name, {})))
        sel_s = full_s if name == "angle" else result.cost["wall_s"]
        save_scores(out / name / "scores.json", result, model=cfg.model)
        tau = (kendall_tau(result.scores, reference.scores)
               if result.scores is not None else None)
        modes = [probe] if result.scores is None or not both_modes else ["large", "small"]
        runs = []
        for mode in modes:
            layers = result.choose(layer_map, topk, mode)
            part, part_s = timed_train(dataclasses.replace(
                cfg, method="layers" if layers else "linear", layers=layers or None,
                out=str(out / name / f"partial-{mode}")))
            runs.append(_row(name, part, part_s, sel_s, full_s, tau, layers, mode))
        rows += _tag_modes(runs, result.scores is not None)
    summary = {"rows": rows, "probe_mode": probe, "probe_reason": reason, "probe_s": probe_s,
               "full_s": full_s, "topk": topk, "auto_picks_better": _auto_check(rows)}
    atomic_write_json(out / "comparison.json", summary)
    atomic_write_text(out / "comparison.md", table(summary))
    return summary


def _row(name: str, summary: dict[str, Any], train_s: float, sel_s: float, full_s: float,
         tau: float | None, layers: list[str], mode: str) -> dict[str, Any]:
    total = sel_s + train_s if name != "full" else train_s
    return {"selector": name, "mode": mode, "tau": tau, "layers": layers,
            "trainable_params": summary["trainable_params"], "best_val_acc": summary["best_acc"],
            "test_acc": summary["test_acc"], "select_s": round(sel_s, 1),
            "train_s": round(train_s, 1), "total_s": round(total, 1),
            "cost_x_full": round(total / full_s, 2)}


def _tag_modes(runs: list[dict[str, Any]], scored: bool) -> list[dict[str, Any]]:
    """Rows of one selector: ``-`` without scores (greedy); in both modes, ``(auto)`` on the
    one ``--mode auto`` keeps when its pilots run the whole schedule."""
    from partialft.selectors.auto import rank

    if not scored:
        return [{**r, "mode": "-"} for r in runs]
    if len(runs) < 2:
        return runs
    best = min(runs, key=lambda r: rank(r["best_val_acc"], r["trainable_params"], r["mode"]))
    return [{**r, "mode": r["mode"] + (" (auto)" if r is best else "")} for r in runs]


def _auto_check(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Per score selector run in both modes: is its ``(auto)`` row the better one on test."""
    out: dict[str, bool] = {}
    by_sel: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["selector"] != "full" and r["tau"] is not None:
            by_sel.setdefault(r["selector"], []).append(r)
    for sel, both in by_sel.items():
        if len(both) == 2:
            auto = next(r for r in both if r["mode"].endswith("(auto)"))
            out[sel] = auto["test_acc"] >= max(r["test_acc"] for r in both)
    return out


def table(summary: dict[str, Any]) -> str:
    """The comparison as a Markdown table."""
    lines = ["| selector | mode | Kendall tau vs full angles | layers | trainable params | "
             "val acc (%) | test acc (%) | select (s) | train (s) | total (s) | x full FT |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        tau = "-" if r["tau"] is None else f"{r['tau']:.2f}"
        lines.append(f"| {r['selector']} | {r['mode']} | {tau} | {len(r['layers'])} | "
                     f"{r['trainable_params']:,} | {r['best_val_acc']:.2f} | {r['test_acc']:.2f}"
                     f" | {r['select_s']:.1f} | {r['train_s']:.1f} | {r['total_s']:.1f} | "
                     f"{r['cost_x_full']:.2f} |")
    lines.append("\n(auto): the mode with the better validation accuracy at the full schedule "
                 "(`--mode auto --pilot-fraction 1`); greedy's mode, by the linear-probe rule: "
                 f"{summary['probe_mode']} ({summary['probe_reason']}; "
                 f"{summary['probe_s']:.1f} s)")
    return "\n".join(lines) + "\n"
