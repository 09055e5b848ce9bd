"""Figures like the paper's Figs. 1, 3, 4 and 6, drawn with matplotlib's Agg canvas.

Figures are built as ``matplotlib.figure.Figure`` objects (no pyplot global state, no GUI
backend), one subplot per (model, dataset) pair.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import cm, ticker
from matplotlib.figure import Figure

from partialft.analysis.rows import AngleSet, Row, topk_value
from partialft.core.angles import kendall_tau, rank
from partialft.errors import PartialFTError
from partialft.utils.io import atomic_write

MANUAL = ("full", "attn", "ffn", "first-half-attn", "last-half-attn", "first-half-ffn",
          "last-half-ffn", "first-half-blocks", "last-half-blocks")

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def _save(fig: Figure, path: Path) -> str:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight"))
    return path.name


def _panels(n: int, width: float = 6.0, height: float = 4.5) -> tuple[Figure, list[Any]]:
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _by_task(rows: Sequence[Row]) -> dict[tuple[str, str], list[Row]]:
    tasks: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        tasks.setdefault((r.model, r.dataset), []).append(r)
    return tasks


def _acc_name(rows: Sequence[Row]) -> str:
    return "test" if all(r.test_mean is not None for r in rows) else "val"


def accuracy_vs_params(rows: Sequence[Row], path: Path) -> str:
    """Fig. 1: accuracy against trainable parameters (log scale), one point per configuration.

    Points whose parameter counts lie within 5% of each other (e.g. ATTN-only, first-half-FFN
    and FAPFT top-4 near 0.8 M) are spread sideways, in parameter order, so that none hides
    another; the x label says so.
    """
    tasks = _by_task([r for r in rows if r.acc is not None and r.trainable_params])
    fig, axes = _panels(len(tasks), width=7.0)
    colors = [cm.tab20(i % 20) for i in range(20)]
    for ax, ((model, dataset), task_rows) in zip(axes, tasks.items()):
        xs = dodge([r.trainable_params / 1e6 for r in task_rows])
        for i, (r, x) in enumerate(zip(task_rows, xs)):
            ax.errorbar(x, r.acc, yerr=r.acc_std or 0.0, fmt=MARKERS[i % len(MARKERS)], ms=8,
                        capsize=3, color=colors[i % 20], label=r.label)
        _log_axis(ax.xaxis, xs)
        moved = any(abs(x - r.trainable_params / 1e6) > 1e-12 for x, r in zip(xs, task_rows))
        ax.set_xlabel("trainable parameters (millions, log scale)" + (
            "\npoints within 5% of each other's count are spread sideways" if moved else ""))
        ax.set_ylabel(f"top-1 {_acc_name(task_rows)} accuracy (%)")
        ax.set_title(f"Accuracy vs trainable parameters\n{model} on {dataset}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _save(fig, path)


def dodge(xs: Sequence[float], close: float = 0.021, step: float = 0.045) -> list[float]:
    """x positions on a log axis: runs of values within ``close`` decades of the next (5%) are
    spread ``step`` decades apart around their middle, keeping their order."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = list(xs)
    cluster: list[int] = []
    for i in [*order, None]:
        if i is not None and cluster and math.log10(xs[i] / xs[cluster[-1]]) < close:
            cluster.append(i)
            continue
        centre = statistics.fmean(math.log10(xs[j]) for j in cluster) if cluster else 0.0
        for pos, j in enumerate(cluster if len(cluster) > 1 else []):
            out[j] = 10 ** (centre + (pos - (len(cluster) - 1) / 2) * step)
        cluster = [i] if i is not None else []
    return out


def _span(values: Sequence[float]) -> float:
    return max(max(values) - min(values), 1.0) if values else 1.0


def _log_axis(axis: Any, values: Sequence[float]) -> None:
    """A log axis with plain-number ticks (no 10^x labels): at 1, 2 and 5 of each decade when
    the values span under two decades, else at each power of ten (labels would collide)."""
    axis.axes.set_xscale("log") if axis.axis_name == "x" else axis.axes.set_yscale("log")
    decades = math.log10(max(values) / min(values)) if values else 0.0
    subs = (1.0, 2.0, 5.0) if decades < 2 else (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def manual_strategies(rows: Sequence[Row], path: Path) -> str:
    """Fig. 3 as a dot plot: each manual strategy's accuracy (± std) beside full fine-tuning
    (dashed line, its std shaded); a dot plot, because bars would need an axis starting at zero.
    Each label gives the trainable parameters and the difference to full fine-tuning; the x axis
    spans at least MIN_SPAN points so that small gaps are not drawn large."""
    tasks = {k: v for k, v in _by_task(rows).items() if _has_manual(v)}
    fig, axes = _panels(len(tasks), width=7.5)
    for ax, ((model, dataset), task_rows) in zip(axes, tasks.items()):
        chosen = sorted((r for r in task_rows
                         if r.method in MANUAL and r.acc is not None and not r.scratch),
                        key=lambda r: MANUAL.index(r.method))
        partial = next(r for r in chosen if r.method != "full")
        fulls = [r for r in chosen if r.method == "full"]
        full = next((r for r in fulls if r.same_recipe(partial)), fulls[0])
        ys = range(len(chosen))
        for y, r in zip(ys, chosen):
            color = "black" if r.method == "full" else "tab:blue"
            ax.errorbar(r.acc, y, xerr=r.acc_std or 0, fmt="o", ms=7, capsize=3, color=color)
        _full_line(ax, full, vertical=True)
        ax.set_yticks(list(ys), [_strategy_label(r, full) for r in chosen], fontsize=8)
        ax.invert_yaxis()
        ends = [v for r in chosen for v in (r.acc - (r.acc_std or 0), r.acc + (r.acc_std or 0))]
        low, high = min(ends), max(ends)
        pad = max(0.0, MIN_SPAN - (high - low))
        ax.set_xlim(low - pad - 0.5, high + 0.5)
        ax.set_xlabel(f"top-1 {_acc_name(chosen)} accuracy (%); labels: trainable "
                      "parameters, Δ to full fine-tuning (points)")
        ax.set_title(f"Manual partial fine-tuning vs full\n{model} on {dataset}")
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    return _save(fig, path)


MIN_SPAN = 10.0  # Fig. 3's narrowest x axis, in accuracy points


def _strategy_label(r: Row, full: Row) -> str:
    """'first-half-blocks, 1.19 M, Δ -0.38' (full fine-tuning: its parameters only)."""
    params = f"{(r.trainable_params or 0) / 1e6:.2f} M"
    if r is full:
        return f"{r.label}, {params}"
    return f"{r.label}, {params}, Δ {r.acc - full.acc:+.2f}"  # type: ignore[operator]


def _full_line(ax: Any, full: Row, vertical: bool) -> None:
    """Full fine-tuning's mean as a dashed line and its std (over seeds) as a shaded band."""
    label = full.label.replace("full", "full fine-tuning", 1)
    line, span = (ax.axvline, ax.axvspan) if vertical else (ax.axhline, ax.axhspan)
    line(full.acc, ls="--", color="black", lw=1, label=label)
    if full.acc_std:
        span(full.acc - full.acc_std, full.acc + full.acc_std, color="black", alpha=0.12, lw=0,
             label=f"{label} ± std over {full.n} seeds")


def _has_manual(rows: Sequence[Row]) -> bool:
    methods = {r.method for r in rows if r.acc is not None and not r.scratch}
    return "full" in methods and bool(methods & set(MANUAL[1:]))


def angle_ranks(sets: Sequence[AngleSet], path: Path) -> str:
    """Fig. 4: per homogeneous group, the rank (1 = largest angle) of each layer in each set."""
    groups = [g for g, ids in sets[0].groups.items() if len(ids) > 1]
    for s in sets[1:]:
        missing = [i for g in groups for i in sets[0].groups[g] if i not in s.angles]
        if missing:
            raise PartialFTError(f"angles {s.label} lack layer {missing[0]} that {sets[0].label} "
                                 "has; compare angles of the same model only.")
    fig, axes = _panels(len(groups), width=max(4.0, 1.1 * len(sets) + 2.5),
                        height=max(4.0, 0.45 * max(len(sets[0].groups[g]) for g in groups) + 2))
    for ax, group in zip(axes, groups):
        ids = sets[0].groups[group]
        ranks = np.array([rank(s.angles, ids) for s in sets]).T  # (layers, sets)
        im = ax.imshow(ranks, cmap="Blues", aspect="auto", vmin=1, vmax=len(ids))
        for (i, j), value in np.ndenumerate(ranks):
            dark = value > 0.6 * len(ids)
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
        ax.set_xticks(range(len(sets)), [s.label for s in sets], rotation=35, ha="right")
        ax.set_yticks(range(len(ids)), ids, fontsize=7)
        ax.set_xlabel("angle set (the run dir or angles file it was read from)")
        ax.set_ylabel("layer (depth increases downward)")
        tau = mean_tau(sets, ids)
        pairs = len(sets) * (len(sets) - 1) // 2
        tau_text = (f"mean Kendall tau over the {pairs} pair{'s' if pairs > 1 else ''} of "
                    f"these {len(sets)} sets: {tau:.3f}" if tau is not None
                    else f"one angle set: {sets[0].label}")
        ax.set_title(f"Fine-tuned angle rank of each {group} layer\n{tau_text}")
        bar = fig.colorbar(im, ax=ax, label="rank (1 = largest angle)")
        bar.set_ticks(sorted({1, len(ids), *range(1, len(ids) + 1, max(1, len(ids) // 6))}))
    return _save(fig, path)


def mean_tau(sets: Sequence[AngleSet], ids: list[str]) -> float | None:
    pairs = list(itertools.combinations(sets, 2))
    if not pairs:
        return None
    taus = [kendall_tau({i: a.angles[i] for i in ids}, {i: b.angles[i] for i in ids})
            for a, b in pairs]
    return float(np.mean(taus))


def topk_mode(rows: Sequence[Row], path: Path) -> str:
    """Fig. 6: FAPFT accuracy against top-k for largest/smallest angles, full FT dashed."""
    tasks = {k: v for k, v in _by_task(rows).items() if fapft_points(v)}
    fig, axes = _panels(len(tasks))
    for ax, ((model, dataset), task_rows) in zip(axes, tasks.items()):
        points = fapft_points(task_rows)
        for mode, marker in (("large", "o"), ("small", "s")):
            pts = sorted((k, r) for k, r in points if r.options.get("mode") == mode)
            if pts:
                ax.errorbar([k for k, _ in pts], [r.acc for _, r in pts], marker=marker,
                            yerr=[r.acc_std or 0 for _, r in pts], capsize=3,
                            label=f"FAPFT, {'largest' if mode == 'large' else 'smallest'} "
                            "angles")
        full = [r for r in task_rows if r.method == "full" and r.acc is not None
                and not r.scratch and r.same_recipe(points[0][1])]
        if full:
            _full_line(ax, full[0], vertical=False)
        ks = sorted({k for k, _ in points})
        ax.set_xticks(ks, [f"k={k}" for k in ks])
        ax.set_xlabel("top-k (layers fine-tuned per homogeneous group)")
        ax.set_ylabel(f"top-1 {_acc_name(task_rows)} accuracy (%)")
        ax.set_title(f"FAPFT: top-k and angle magnitude\n{model} on {dataset}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def fapft_points(rows: Sequence[Row]) -> list[tuple[int, Row]]:
    return [(topk_value(r.options.get("topk")), r) for r in rows
            if r.method == "fapft" and r.acc is not None and not r.varies
            and topk_value(r.options.get("topk")) is not None
            and r.options.get("mode") in ("large", "small")]


def make_all(rows: Sequence[Row], angle_sets: Sequence[AngleSet], out: Path
             ) -> tuple[dict[str, str], dict[str, str]]:
    """Draw every figure the inputs have data for; returns (made, skipped with reasons)."""
    made: dict[str, str] = {}
    skipped: dict[str, str] = {}
    checks = [
        ("fig1_accuracy_vs_params", accuracy_vs_params,
         any(r.acc is not None and r.trainable_params for r in rows),
         "no run has an accuracy and a trainable-parameter count", rows),
        ("fig3_manual_strategies", manual_strategies,
         any(_has_manual(v) for v in _by_task(rows).values()),
         "needs a full fine-tuning run and a manual-strategy run of the same model and dataset",
         rows),
        ("fig4_angle_ranks", angle_ranks, bool(angle_sets) and any(
            len(ids) > 1 for ids in angle_sets[0].groups.values()),
         "no angles files (angles.json in a run dir, or FILE.json) were given", angle_sets),
        ("fig6_topk_mode", topk_mode, any(fapft_points(v) for v in _by_task(rows).values()),
         "needs fapft runs with one top-k for every group and a mode (large or small)", rows),
    ]
    for name, draw, ok, why, data in checks:
        if ok:
            made[name] = draw(data, out / f"{name}.png")
        else:
            skipped[name] = why
    return made, skipped
