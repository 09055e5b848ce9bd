"""Run dirs read back for reports: one :class:`Row` per configuration, averaged over seeds.

A configuration is a run's whole resolved config (``summary.json`` -> ``config``) minus the
settings that cannot change a finished run's result: ``seed`` (what the rows average over),
``out``, ``max_steps`` and ``checkpoint_every`` (a run stopped and resumed gives the same result,
bit for bit), ``log_with``, ``keep_state`` and ``save_full`` (what is logged or kept
afterwards), ``threads`` and ``workers`` (how many CPU threads and loader processes did the
work). Rows of one
method that differ in anything else say what differs. Two runs with the same configuration *and*
seed are duplicates: they count once.

Both the tables (:mod:`partialft.analysis.report`) and the figures
(:mod:`partialft.analysis.plots`) read these types, so neither imports the other.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError
from partialft.training.checkpoints import SUMMARY
from partialft.training.runfiles import read_evals, read_json, read_selection, read_summary
from partialft.training.runs import NOT_RECIPE, recipe

ANGLES = "angles.json"
# config keys that cannot change the result of a finished run (resume is bitwise exact)
NOT_CONFIG = NOT_RECIPE
# keys already shown by a row's method label, never repeated as a difference
SHOWN = ("method", "topk", "mode", "pretrained", "soup", "ingredients")


@dataclass
class Run:
    """One run dir: its summary, resolved config and eval.json (if any)."""

    path: str
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    evals: dict[str, Any] = field(default_factory=dict)


@dataclass
class AngleSet:
    label: str
    angles: dict[str, float]
    groups: dict[str, list[str]]


@dataclass
class Row:
    """Runs of one configuration, aggregated over seeds (duplicates counted once)."""

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
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # eval key -> metrics
    duplicates: list[str] = field(default_factory=list)
    varies: dict[str, Any] = field(default_factory=dict)  # what sets it apart from its siblings
    config: dict[str, Any] = field(default_factory=dict)  # the configuration (minus seed)

    def same_recipe(self, other: Row, ignore: Sequence[str] = ()) -> bool:
        """Whether two rows share every setting but the method's own and ``ignore``."""
        skip = {*SHOWN, "angles", "layers", *ignore}
        keys = (set(self.config) | set(other.config)) - skip
        return all(self.config.get(k) == other.config.get(k) for k in keys)

    @property
    def acc(self) -> float | None:
        """The accuracy plots use: test if measured, else val."""
        return self.test_mean if self.test_mean is not None else self.val_mean

    @property
    def acc_std(self) -> float | None:
        return self.test_std if self.test_mean is not None else self.val_std

    @property
    def scratch(self) -> bool:
        """Trained from random weights (no pretraining, no checkpoint)."""
        return self.options.get("pretrained") is False and not self.options.get("checkpoint")

    @property
    def label(self) -> str:
        """The method as tables and legends name it: 'fapft (k=4, small)', 'greedy soup'."""
        extra = []
        if self.method == "soup":
            name = f"{self.options.get('soup', 'uniform')} soup"
            extra.append(ingredients_text(self.options.get("ingredients") or []))
        else:
            name = self.method
        if self.method == "fapft" and self.options.get("topk") is not None:
            extra.append(f"k={topk_text(self.options['topk'])}")
        if self.method == "fapft" and self.options.get("mode"):
            extra.append(str(self.options["mode"]))
        if self.scratch:
            extra.insert(0, "from scratch")
        extra += [f"{k} {_short_value(v)}" for k, v in self.varies.items()]
        return name + (f" ({', '.join(extra)})" if extra else "")


def ingredients_text(ingredients: Sequence[str]) -> str:
    """'5 fapft, large; topk 1,2,3,4,5' from a soup's ingredient recipes (JSON); '3
    ingredients' when only their paths are known."""
    recipes = []
    for item in ingredients:
        try:
            recipes.append(json.loads(item))
        except ValueError:
            n = len(ingredients)
            return f"{n} ingredient{'' if n == 1 else 's'}"
    methods = sorted({str(r.get("method")) for r in recipes})
    text = f"{len(recipes)} {' + '.join(methods)}"
    same_mode = {r.get("mode") for r in recipes}
    if methods == ["fapft"] and len(same_mode) == 1:
        text += f", {same_mode.pop()}"
    keys = sorted({k for r in recipes for k in r} - {"method", "mode"})
    differ = [k for k in keys
              if len({json.dumps(r.get(k), sort_keys=True) for r in recipes}) > 1]
    for key in differ[:2]:
        values = sorted({_short_value(r.get(key)) for r in recipes}, key=_natural)
        text += f"; {key} {','.join(values)}"
    return text + ("; ..." if len(differ) > 2 else "")


def _natural(text: str) -> tuple:
    """Numbers in numeric order, then text."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def topk_text(topk: Any) -> str:
    """4, "4", [4] -> '4'; [0, 0, 6, 2] or "0,0,6,2" -> '0,0,6,2'."""
    if isinstance(topk, (list, tuple)):
        return ",".join(str(k) for k in topk)
    return str(topk).strip("[] ").replace(" ", "")


def topk_value(topk: Any) -> int | None:
    """One top-k for every group (a number for Fig. 6's x axis), else None."""
    parts = {p for p in topk_text(topk).split(",") if p}
    if len(parts) != 1:
        return None
    try:
        return int(parts.pop())
    except ValueError:
        return None


def _short_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else "..." + text[-37:]


def load_inputs(paths: Sequence[str | Path]) -> tuple[list[Run], list[AngleSet]]:
    """Run dirs (summary.json, optional angles.json/eval.json) and angles JSON files."""
    runs: list[Run] = []
    angle_sets: list[AngleSet] = []
    for p in map(Path, paths):
        if p.is_file() and p.suffix == ".json":
            angle_sets.append(_angle_set(p, p.stem))
        elif p.is_dir() and ((p / SUMMARY).is_file() or (p / ANGLES).is_file()):
            if (p / SUMMARY).is_file():
                runs.append(_run(p))
            if (p / ANGLES).is_file():
                angle_sets.append(_angle_set(p / ANGLES, p.name))
        else:
            raise PartialFTError(f"{p} is neither a run dir (with {SUMMARY} or {ANGLES}) nor an "
                                 "angles .json file.")
    return runs, angle_sets


def _run(path: Path) -> Run:
    """A run dir's files, each read and checked by :mod:`partialft.training.runfiles`."""
    summary = read_summary(path)
    evals, selection = read_evals(path), read_selection(path)
    return Run(str(path), summary, config_of(path, summary, selection), evals)


def config_of(path: Path, summary: dict[str, Any], selection: dict[str, Any]) -> dict[str, Any]:
    """The configuration a run stands for (see the module docstring)."""
    seed = summary.get("seed")
    if summary.get("method") == "soup" and summary.get("ingredient_recipes"):
        # a soup is its ingredients' recipes (not their paths): soups of each seed's runs
        # made the same way are one row, and what went in names it
        recipes = [_angles_named(dict(r), r.get("angles_from"), seed, path)
                   for r in summary["ingredient_recipes"]]
        return {"method": "soup", "soup": summary.get("soup"),
                "ingredients": sorted(json.dumps(r, sort_keys=True) for r in recipes)}
    config = recipe(summary.get("config") or {})
    config["method"] = summary.get("method", config.get("method"))
    if summary.get("method") == "soup":  # written before soups recorded their recipes
        config.update(soup=summary.get("soup"), ingredients=sorted(summary.get("used") or []))
    elif selection.get("topk") is not None:
        config["topk"] = selection["topk"]  # what the selection really used (defaults resolved)
    return _angles_named(config, summary.get("angles_from"), seed, path)


def _angles_named(config: dict[str, Any], origin: dict[str, Any] | None, seed: Any,
                  path: Path) -> dict[str, Any]:
    """Replace an angles file's path by what it measured: runs whose angles came from runs of
    one recipe (each from its own seed's, say) are one configuration."""
    config.pop("angles_from", None)
    angles = config.get("angles")
    if not angles:
        return config
    if origin:
        which = "same seed" if origin.get("seed") == seed else f"seed {origin.get('seed')}"
        config["angles"] = f"from {origin.get('method')} run {origin.get('recipe')}, {which}"
    elif Path(angles).parent.resolve() == path.resolve().parent:
        # the pipeline's own angles (fapft/angles.json, the demo's) in runs that predate
        # angles_from: derived from this same config and seed, so not a setting of their own
        config["angles"] = "<the pipeline's own>"
    return config


def _angle_set(path: Path, label: str) -> AngleSet:
    from partialft.core.angles import load_angles

    data = read_json(path, "angles")
    angles = load_angles(path)  # checks every value is a number of degrees
    groups = data.get("groups") if isinstance(data, dict) else None
    if groups is None:
        groups = {"all": list(angles)}
    if not (isinstance(groups, dict) and all(isinstance(ids, list) and all(
            isinstance(i, str) for i in ids) for ids in groups.values())):
        raise PartialFTError(f"angles file {path} has damaged 'groups': it must map each group "
                             "name to a list of layer ids.")
    groups = {str(g): [i for i in ids if i in angles] for g, ids in groups.items()}
    return AngleSet(label, angles, groups)


def config_key(run: Run) -> str:
    return json.dumps(run.config, sort_keys=True)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std


def group_runs(runs: Sequence[Run]) -> list[Row]:
    """One Row per configuration, in first-seen order; duplicate seeds count once."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(config_key(run), []).append(run)
    rows = [_row(members) for members in groups.values()]
    _mark_differences(rows, [groups[k][0].config for k in groups])
    return rows


def _row(members: list[Run]) -> Row:
    unique: dict[Any, Run] = {}
    duplicates = []
    for run in members:
        seed = run.summary.get("seed")
        if seed in unique and seed is not None:
            duplicates.append(run.path)
        else:
            unique.setdefault(seed if seed is not None else run.path, run)
    kept = list(unique.values())
    vals = [float(r.summary["best_acc"]) for r in kept if r.summary.get("best_acc") is not None]
    tests = [float(r.summary["test_acc"]) for r in kept if r.summary.get("test_acc") is not None]
    s, cfg = kept[0].summary, kept[0].config
    return Row(method=str(s.get("method")), model=str(s.get("model")),
               dataset=str(s.get("dataset")), n=len(kept),
               val_mean=_mean_std(vals)[0], val_std=_mean_std(vals)[1],
               test_mean=_mean_std(tests)[0], test_std=_mean_std(tests)[1],
               trainable_params=s.get("trainable_params"),
               options={k: cfg.get(k) for k in (*SHOWN, "checkpoint") if k in cfg},
               seeds=[r.summary.get("seed") for r in kept], runs=[r.path for r in kept],
               evals=_mean_evals(kept), duplicates=duplicates, config=cfg)


def _mark_differences(rows: list[Row], configs: list[dict[str, Any]]) -> None:
    """Rows of one method, model and dataset name the settings that set them apart."""
    by_method: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        by_method.setdefault((r.label, r.model, r.dataset), []).append(i)
    for members in by_method.values():
        if len(members) < 2:
            continue
        keys = sorted({k for i in members for k in configs[i]} - set(SHOWN))
        differ = [k for k in keys if len({json.dumps(configs[i].get(k), sort_keys=True)
                                          for i in members}) > 1]
        for i in members:
            rows[i].varies = {k: configs[i].get(k) for k in differ}


# metrics of eval.json entries the report shows (a nested key as "outer.inner")
EVAL_METRICS = ("clean_acc", "acc", "mean_corruption_error", "relative_corruption_error",
                "mce_vs_alexnet.mce")


def _mean_evals(members: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """Per evaluation (eval.json key): each metric's mean over the runs that have it, and how
    many runs that is."""
    picks: dict[str, dict[str, list[float]]] = {}
    for run in members:
        for key, res in run.evals.items():
            for metric in EVAL_METRICS:
                value: Any = res
                for part in metric.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    picks.setdefault(key, {}).setdefault(metric.split(".")[0], []).append(
                        float(value))
    return {key: {m: {"mean": statistics.fmean(v), "runs": len(v)} for m, v in metrics.items()}
            for key, metrics in picks.items()}
