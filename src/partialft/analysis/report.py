"""Tables (paper Tables 1-4 style) and figures from run dirs: ``partialft report``.

Rows come from :mod:`partialft.analysis.rows`: one per configuration, mean ± sample std over the
seeds of runs that differ only in seed; duplicates (same configuration and seed) count once and
are listed; rows of one method that differ in another setting name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from partialft.analysis.rows import AngleSet, Row, Run, group_runs, load_inputs
from partialft.errors import PartialFTError
from partialft.utils.io import atomic_write_json, atomic_write_text

__all__ = ["AngleSet", "Row", "Run", "group_runs", "load_inputs", "markdown_table",
           "robustness_table", "write_report"]


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _runs(row: Row) -> str:
    extra = f" (+{len(row.duplicates)} duplicate)" if row.duplicates else ""
    return f"{row.n}{extra}"


def markdown_table(rows: Sequence[Row]) -> str:
    """Paper Tables 1-2 style: method, accuracy (mean ± std over seeds), trainable params."""
    lines = ["| method | model | dataset | seeds | val acc (%) | test acc (%) | "
             "trainable params (M) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = _millions(r.trainable_params)
        lines.append(f"| {r.label} | {r.model} | {r.dataset} | {_runs(r)} | "
                     f"{_pm(r.val_mean, r.val_std)} | {_pm(r.test_mean, r.test_std)} | "
                     f"{params} |")
    return "\n".join(lines) + "\n"


def _millions(n: int | None) -> str:
    """85.88; a count under 0.01 M keeps its first two significant digits (0.0013)."""
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}" if n >= 5_000 else f"{n / 1e6:.2g}"


def duplicates_note(rows: Sequence[Row]) -> str:
    """Runs that repeat another run's configuration and seed: listed, counted once."""
    lines = [f"- {dup} repeats the configuration and seed of {r.runs[0]} ({r.label}); counted "
             "once" for r in rows for dup in r.duplicates]
    return "\n".join(lines) + "\n" if lines else ""


# eval.json metric -> column title of the robustness table
EVAL_COLUMNS = {"clean_acc": "clean acc (%)", "acc": "acc (%)",
                "mean_corruption_error": "mean corruption error (%)",
                "relative_corruption_error": "relative corruption error (points)",
                "mce_vs_alexnet": "mCE vs AlexNet (%)"}


def robustness_table(rows: Sequence[Row]) -> str:
    """Paper Table 4 style from eval.json: one line per row and evaluation (empty string when
    no run has evaluations). A value from fewer runs than the row has says how many."""
    metrics = [m for m in EVAL_COLUMNS if any(m in ev for r in rows for ev in r.evals.values())]
    if not metrics:
        return ""
    lines = ["| method | evaluation | " + " | ".join(EVAL_COLUMNS[m] for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for r in rows:
        for key, values in sorted(r.evals.items()):
            cells = [_eval_cell(values.get(m), r.n) for m in metrics]
            lines.append(f"| {r.label} | {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _eval_cell(value: dict[str, Any] | None, n: int) -> str:
    if value is None:
        return "-"
    runs = "" if value["runs"] == n else f" ({value['runs']} of {n} seeds)"
    return f"{value['mean']:.2f}{runs}"


def write_report(paths: Sequence[str | Path], out: str | Path, overwrite: bool = False
                 ) -> dict[str, Any]:
    """report.md, report.json and the figures the runs have data for, under ``out``."""
    from partialft.utils.extras import require

    require("matplotlib", "the report's figures")
    from partialft.analysis import plots
    from partialft.training.reruns import check_output, finish, open_output

    out = Path(out)
    # a report killed half-way is rerun (rewritten whole) by the same command
    settings = {"inputs": [str(Path(p).resolve()) for p in paths]}
    claim = dict(overwrite=overwrite, inputs=paths)
    check_output(out, "report", settings, **claim)
    runs, angle_sets = load_inputs(paths)
    if not runs and not angle_sets:
        raise PartialFTError("no run dirs or angles files given; pass RUN_DIR... or FILE.json.")
    rows = group_runs(runs)
    with open_output(out, "report", settings, **claim) as folder:
        made, skipped = plots.make_all(rows, angle_sets, out)
        md = _markdown(rows, made, skipped)
        atomic_write_text(out / "report.md", md)
        report = {"rows": [{**asdict(r), "label": r.label} for r in rows], "figures": made,
                  "skipped": skipped,
                  "angle_sets": [a.label for a in angle_sets]}
        atomic_write_json(out / "report.json", report)
        finish(folder)
    return report


def _markdown(rows: Sequence[Row], made: dict[str, str], skipped: dict[str, str]) -> str:
    parts = ["# partialft report\n"]
    if rows:
        parts += ["## Accuracy and trainable parameters\n",
                  "Mean ± sample std over the seeds of runs whose whole configuration is the "
                  "same (a single seed shows no ±); a setting in brackets sets a row apart from "
                  "rows of the same method. Test accuracy is training's pass over the whole "
                  "test split; soups count the sum of their ingredients' trained parameters "
                  "(paper Table 3).\n", markdown_table(rows)]
        dups = duplicates_note(rows)
        if dups:
            parts += ["Duplicates:\n", dups]
    robust = robustness_table(rows)
    if robust:
        parts += ["## Robustness and OOD (eval.json)\n",
                  "The evaluation column names what was evaluated: dataset, split (test unless "
                  "named), subset ('first N' images), corruptions, severities and seed.\n",
                  robust]
    parts.append("## Figures\n")
    parts += [f"![{name}]({file})\n" for name, file in made.items()]
    parts += [f"- skipped {name}: {why}" for name, why in skipped.items()]
    return "\n".join(parts) + "\n"
