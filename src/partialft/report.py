"""Tables (paper Tables 1-4 style) and figures from run dirs: ``partialft report``.

Runs that share a configuration (every summary field except ``seed`` and the measured ones)
form one row; its accuracy is the mean and sample standard deviation over those runs (seeds).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from partialft.checkpoints import SUMMARY
from partialft.errors import PartialFTError
from partialft.io import atomic_write_json, atomic_write_text

ANGLES = "angles.json"
# Summary fields measured by a run (not part of its configuration).
MEASURED = {"seed", "best_acc", "final_acc", "test_acc", "wall_s", "images_per_s", "device",
            "processes", "precision", "total_params", "union_params", "greedy_history",
            "ingredient_val_acc", "ingredient_params", "ingredient_methods"}
# Configuration fields read from config.yaml / selection.json that the summary lacks.
CONFIG_KEYS = ("topk", "mode", "weight_decay", "batch_size", "img_size", "pretrained",
               "checkpoint")


@dataclass
class Run:
    """One run dir: its summary, the selection options and eval.json (if any)."""

    path: str
    summary: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    evals: dict[str, Any] = field(default_factory=dict)


@dataclass
class AngleSet:
    label: str
    angles: dict[str, float]
    groups: dict[str, list[str]]


@dataclass
class Row:
    """Runs of one configuration, aggregated over seeds."""

    method: str
    model: str
    dataset: str
    n: int
    val_mean: float | None
    val_std: float | None
    test_mean: float | None
    test_std: float | None
    trainable_params: int | None
    options: dict[str, Any]
    seeds: list[Any]
    runs: list[str]
    evals: dict[str, Any] = field(default_factory=dict)

    @property
    def acc(self) -> float | None:
        """The accuracy plots use: test if measured, else val."""
        return self.test_mean if self.test_mean is not None else self.val_mean

    @property
    def acc_std(self) -> float | None:
        return self.test_std if self.test_mean is not None else self.val_std


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise PartialFTError(f"{path} is not valid JSON.") from None


def _options(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """topk/mode/... from selection.json, then config.yaml, then the summary's config."""
    import yaml

    found: dict[str, Any] = {}
    sources = [summary.get("config") or {}]
    if (run_dir / "config.yaml").is_file():
        sources.insert(0, yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    if (run_dir / "selection.json").is_file():
        sources.insert(0, _read_json(run_dir / "selection.json"))
    for key in CONFIG_KEYS:
        for src in sources:
            if src.get(key) is not None:
                found[key] = src[key]
                break
    return found


def load_inputs(paths: Sequence[str | Path]) -> tuple[list[Run], list[AngleSet]]:
    """Run dirs (summary.json, optional angles.json/eval.json) and angles JSON files."""
    runs: list[Run] = []
    angle_sets: list[AngleSet] = []
    for p in map(Path, paths):
        if p.is_file() and p.suffix == ".json":
            angle_sets.append(_angle_set(p, p.stem))
        elif p.is_dir() and ((p / SUMMARY).is_file() or (p / ANGLES).is_file()):
            if (p / SUMMARY).is_file():
                summary = _read_json(p / SUMMARY)
                evals = _read_json(p / "eval.json") if (p / "eval.json").is_file() else {}
                runs.append(Run(str(p), summary, _options(p, summary), evals))
            if (p / ANGLES).is_file():
                angle_sets.append(_angle_set(p / ANGLES, p.name))
        else:
            raise PartialFTError(f"{p} is neither a run dir (with {SUMMARY} or {ANGLES}) nor an "
                                 "angles .json file.")
    return runs, angle_sets


def _angle_set(path: Path, label: str) -> AngleSet:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("angles"), dict):
        raise PartialFTError(f"{path} is not an angles file (a JSON object with 'angles').")
    angles = {str(k): float(v) for k, v in data["angles"].items()}
    groups = data.get("groups") or {"all": list(angles)}
    groups = {g: [i for i in ids if i in angles] for g, ids in groups.items()}
    return AngleSet(label, angles, groups)


def config_key(run: Run) -> tuple:
    """Everything that defines a configuration: summary fields minus seed and measurements."""
    items = {k: v for k, v in run.summary.items()
             if k not in MEASURED and not isinstance(v, dict)}
    items.update(run.options)
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in items.items()))


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


def group_runs(runs: Sequence[Run]) -> list[Row]:
    """One Row per configuration, in first-seen order."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(config_key(run), []).append(run)
    rows = []
    for members in groups.values():
        s = members[0].summary
        vals = [float(r.summary["best_acc"]) for r in members
                if r.summary.get("best_acc") is not None]
        tests = [float(r.summary["test_acc"]) for r in members
                 if r.summary.get("test_acc") is not None]
        rows.append(Row(method=str(s.get("method")), model=str(s.get("model")),
                        dataset=str(s.get("dataset")), n=len(members),
                        val_mean=_mean_std(vals)[0], val_std=_mean_std(vals)[1],
                        test_mean=_mean_std(tests)[0], test_std=_mean_std(tests)[1],
                        trainable_params=s.get("trainable_params"), options=members[0].options,
                        seeds=[r.summary.get("seed") for r in members],
                        runs=[r.path for r in members], evals=_mean_evals(members)))
    return rows


def _mean_evals(members: Sequence[Run]) -> dict[str, float]:
    """Headline robustness numbers (eval.json) averaged over the runs that have them."""
    picks: dict[str, list[float]] = {}
    for run in members:
        for key, res in run.evals.items():
            for metric in ("clean_acc", "acc", "mean_corruption_error", "mce"):
                if isinstance(res, dict) and isinstance(res.get(metric), (int, float)):
                    picks.setdefault(f"{key} {metric}", []).append(float(res[metric]))
    return {k: statistics.fmean(v) for k, v in picks.items()}


def _pm(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def _label(row: Row) -> str:
    extra = [f"{k} {row.options[k]}" for k in ("topk", "mode") if k in row.options
             and row.method == "fapft"]
    if row.options.get("pretrained") is False and not row.options.get("checkpoint"):
        extra.insert(0, "from scratch")
    return row.method + (f" ({', '.join(extra)})" if extra else "")


def markdown_table(rows: Sequence[Row]) -> str:
    """Paper Tables 1-2 style: method, accuracy (mean ± std over seeds), trainable params."""
    lines = ["| method | model | dataset | runs | val acc (%) | test acc (%) | "
             "trainable params (M) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = f"{r.trainable_params / 1e6:.2f}" if r.trainable_params is not None else "-"
        lines.append(f"| {_label(r)} | {r.model} | {r.dataset} | {r.n} | "
                     f"{_pm(r.val_mean, r.val_std, r.n)} | {_pm(r.test_mean, r.test_std, r.n)} | "
                     f"{params} |")
    return "\n".join(lines) + "\n"


def robustness_table(rows: Sequence[Row]) -> str:
    """Paper Table 4 style from eval.json (empty string when no run has evaluations)."""
    cols = sorted({k for r in rows for k in r.evals})
    if not cols:
        return ""
    lines = ["| method | dataset | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for r in (r for r in rows if r.evals):
        cells = [f"{r.evals[c]:.2f}" if c in r.evals else "-" for c in cols]
        lines.append(f"| {_label(r)} | {r.dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(paths: Sequence[str | Path], out: str | Path, overwrite: bool = False
                 ) -> dict[str, Any]:
    """report.md, report.json and the figures the runs have data for, under ``out``."""
    from partialft import plots
    from partialft.outputs import check_claim
    from partialft.rundir import RunDir

    out = Path(out)
    check_claim(out, "report", overwrite=overwrite, inputs=paths)
    runs, angle_sets = load_inputs(paths)
    if not runs and not angle_sets:
        raise PartialFTError("no run dirs or angles files given; pass RUN_DIR... or FILE.json.")
    rows = group_runs(runs)
    with RunDir(out, kind="report", overwrite=overwrite, inputs=paths):
        made, skipped = plots.make_all(rows, angle_sets, out)
        md = _markdown(rows, made, skipped)
        atomic_write_text(out / "report.md", md)
        report = {"rows": [asdict(r) for r in rows], "figures": made, "skipped": skipped,
                  "angle_sets": [a.label for a in angle_sets]}
        atomic_write_json(out / "report.json", report)
    return report


def _markdown(rows: Sequence[Row], made: dict[str, str], skipped: dict[str, str]) -> str:
    parts = ["# partialft report\n"]
    if rows:
        parts += ["## Accuracy and trainable parameters\n",
                  "Mean ± sample std over runs that differ only in seed; soups count the sum of "
                  "their ingredients' trained parameters (paper Table 3).\n", markdown_table(rows)]
    robust = robustness_table(rows)
    if robust:
        parts += ["## Robustness and OOD (eval.json)\n", robust]
    parts.append("## Figures\n")
    parts += [f"![{name}]({file})\n" for name, file in made.items()]
    parts += [f"- skipped {name}: {why}" for name, why in skipped.items()]
    return "\n".join(parts) + "\n"
