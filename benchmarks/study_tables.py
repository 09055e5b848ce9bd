"""study.md: the tables partialft report does not write (see study.py)."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from study_grid import (
    AUTO,
    MODES,
    Protocol,
    angles_file,
    eval_spec,
    seed_dir,
    soup_families,
    table1_dirs,
)
from study_runner import hms, load_json

# --- study.md: what partialft report does not cover ----------------------------------------


def summary(run_dir: Path) -> dict[str, Any] | None:
    """A run dir's summary.json (None when the run is not finished)."""
    return load_json(run_dir / "summary.json", None)


def pm(values: Sequence[float], digits: int = 2) -> str:
    """Mean ± sample std (no ± for one value, '-' for none)."""
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def collect(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """The summaries of the finished ones of these run dirs."""
    return [s for s in map(summary, run_dirs) if s is not None]


def table1_md(p: Protocol, out: Path, ds: str) -> str:
    """Table 1 / Fig. 3: accuracy mean ± std, trainable parameters, training time."""
    lines = ["| method | trainable params | test acc (%) | seeds | train time (s) | x full |",
             "|---|---:|---:|---:|---:|---:|"]
    full_time = None
    for name in table1_dirs(p, out, ds, p.seeds[0]):
        dirs = [table1_dirs(p, out, ds, s)[name] for s in p.seeds]
        runs = collect(dirs)
        if not runs:
            continue
        wall = statistics.fmean(r["wall_s"] for r in runs)
        full_time = wall if name == "full" else full_time
        ratio = f"{wall / full_time:.2f}" if full_time else "-"
        label = auto_label(dirs) if name == "fapft (auto)" else name
        lines.append(f"| {label} | {runs[0]['trainable_params']:,} | "
                     f"{pm([r['test_acc'] for r in runs])} | {len(runs)} | {wall:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def auto_label(run_dirs: Sequence[Path]) -> str:
    """'fapft (auto -> large x3, k=4)': the modes the linear probe chose over the seeds."""
    picks = [load_json(d / "selection.json", None) for d in run_dirs]
    picks = [s for s in picks if s is not None]
    modes = [s.get("mode") for s in picks]
    chosen = ", ".join(f"{m} x{modes.count(m)}" for m in dict.fromkeys(modes))
    topk = ",".join(map(str, picks[0].get("topk") or [])) if picks else "?"
    return f"fapft (auto -> {chosen}, k={topk})"


def fig6_md(p: Protocol, out: Path, ds: str) -> str:
    """Fig. 6 as a table: top-k x mode, with full fine-tuning and the auto choice."""
    lines = ["| top-k per group | trainable params | largest angles (large) | "
             "smallest angles (small) |", "|---|---:|---:|---:|"]
    for k in p.topks:
        cells, params = [], "-"
        for mode in MODES:
            runs = collect([seed_dir(out, ds, s) / f"fapft-{mode}-k{k}" for s in p.seeds])
            cells.append(pm([r["test_acc"] for r in runs]))
            params = f"{runs[0]['trainable_params']:,}" if runs else params
        lines.append(f"| {k} | {params} | {cells[0]} | {cells[1]} |")
    full = collect([seed_dir(out, ds, s) / "full" for s in p.seeds])
    auto_dirs = [seed_dir(out, ds, s) / AUTO / "fapft" for s in p.seeds]
    auto = collect(auto_dirs)
    lines.append(f"| full fine-tuning | {full[0]['trainable_params']:,} | "
                 f"{pm([r['test_acc'] for r in full])} | (same) |" if full else "")
    note = f"\n{auto_label(auto_dirs)}: {pm([r['test_acc'] for r in auto])}\n" if auto else ""
    return "\n".join(line for line in lines if line) + "\n" + note


def angle_pairs(p: Protocol, out: Path) -> dict[tuple[str, str], list[tuple[Path, Path]]]:
    """(dataset, what varies) -> pairs of angles files of full runs differing only in that."""
    fams: dict[tuple[str, str], list[tuple[Path, Path]]] = {}
    lrs = list(dict.fromkeys((p.lr, *p.soup_lrs)))
    epochs = sorted({p.epochs, *p.epoch_variants})
    for ds in p.datasets:
        main = [angles_file(out, ds, s, p.lr, p.epochs) for s in p.seeds]
        fams[(ds, "seed")] = list(itertools.combinations(main, 2))
        fams[(ds, f"learning rate ({', '.join(f'{x:g}' for x in lrs)})")] = [
            pair for s in p.seeds for pair in itertools.combinations(
                [angles_file(out, ds, s, lr, p.epochs) for lr in lrs], 2)]
        fams[(ds, f"epochs ({', '.join(map(str, epochs))})")] = [
            pair for s in p.seeds for pair in itertools.combinations(
                [angles_file(out, ds, s, p.lr, e) for e in epochs], 2)]
    for a, b in itertools.combinations(p.datasets, 2):
        fams[(f"{a} vs {b}", "dataset (same seed)")] = [
            (angles_file(out, a, s, p.lr, p.epochs), angles_file(out, b, s, p.lr, p.epochs))
            for s in p.seeds]
    return fams


def taus(pairs: Sequence[tuple[Path, Path]]) -> dict[str, list[float]]:
    """Kendall tau per homogeneous group over the pairs whose files both exist."""
    from partialft import kendall_tau

    found: dict[str, list[float]] = {}
    for a, b in pairs:
        if not (a.is_file() and b.is_file()):
            continue
        sa, sb = load_json(a, {}), load_json(b, {})
        for group, ids in sa.get("groups", {}).items():
            if len(ids) > 1:
                found.setdefault(group, []).append(kendall_tau(
                    {i: sa["angles"][i] for i in ids}, {i: sb["angles"][i] for i in ids}))
    return found


def null_sd(n: int) -> float:
    """Std of Kendall tau between two independent random rankings of n items."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))


def tau_md(p: Protocol, out: Path) -> str:
    """Fig. 4: Kendall tau between angle rankings, per what varies and per group."""
    lines = ["| dataset | what varies | group | pairs | mean tau | min | max | random rankings |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for (ds, what), pairs in angle_pairs(p, out).items():
        for group, values in taus(pairs).items():
            n = len(load_json(next(a for a, _ in pairs if a.is_file()), {})["groups"][group])
            lines.append(f"| {ds} | {what} | {group} | {len(values)} | "
                         f"{statistics.fmean(values):.3f} | {min(values):.3f} | "
                         f"{max(values):.3f} | 0 ± {null_sd(n):.2f} |")
    return "\n".join(lines) + "\n"


def soups_md(p: Protocol, out: Path, ds: str) -> str:
    """Table 3: ingredients vs uniform and greedy soups, with the paper's parameter sums."""
    lines = ["| ingredients | mean ingredient | best ingredient | uniform soup | greedy soup | "
             "greedy used | params: sum of ingredients (M) | soup delta (M) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for fam in soup_families(p, out, ds, p.seeds[0]):
        per_seed = [soup_row(p, out, ds, s, fam) for s in p.seeds]
        rows = [r for r in per_seed if r is not None]
        if not rows:
            continue
        cols = [pm([r[k] for r in rows]) for k in ("mean", "best", "uniform", "greedy", "used")]
        sums = pm([r["sum"] / 1e6 for r in rows], 3)
        lines.append(f"| {family_label(p, fam)} | {' | '.join(cols)} | {sums} | "
                     f"{pm([r['union'] / 1e6 for r in rows], 3)} |")
    return "\n".join(lines) + "\n"


def family_label(p: Protocol, fam: str) -> str:
    """What a soup family's ingredients are."""
    if fam == "fft":
        return f"full FT, lr {', '.join(f'{x:g}' for x in p.soup_lrs)}"
    return f"FAPFT {fam.split('-')[1]}, top-k {', '.join(map(str, p.soup_topks))}"


def soup_row(p: Protocol, out: Path, ds: str, seed: int, fam: str) -> dict[str, float] | None:
    """One seed's numbers for one soup family (None until both soups are finished)."""
    base = seed_dir(out, ds, seed)
    uni, greedy = (summary(base / f"soup-{fam}-{k}") for k in ("uniform", "greedy"))
    ingredients = [summary(i) for i in soup_families(p, out, ds, seed)[fam]]
    if uni is None or greedy is None or None in ingredients:
        return None
    accs = [i["test_acc"] for i in ingredients]  # type: ignore[index]
    return {"mean": statistics.fmean(accs), "best": max(accs), "uniform": uni["test_acc"],
            "greedy": greedy["test_acc"], "used": float(len(greedy.get("used") or [])),
            "sum": uni["trainable_params"], "union": uni.get("union_params") or 0}


def robust_md(p: Protocol, out: Path, ds: str) -> str:
    """Table 4 style: clean accuracy, mean and relative corruption error, mean ± std."""
    lines = [f"| run | clean acc, first {p.corrupt_images} (%) | mean corruption error (%) | "
             "relative corruption error (points) | seeds |", "|---|---:|---:|---:|---:|"]
    names = list(table1_dirs(p, out, ds, p.seeds[0]))
    names += [f"uniform soup {fam}" for fam in soup_families(p, out, ds, p.seeds[0])]
    for name in names:
        evals = [e for s in p.seeds if (e := study_eval(p, out, ds, s, name)) is not None]
        if not evals:
            continue
        cols = [pm([e[k] for e in evals]) for k in
                ("clean_acc", "mean_corruption_error", "relative_corruption_error")]
        lines.append(f"| {name} | {' | '.join(cols)} | {len(evals)} |")
    return "\n".join(lines) + "\n"


def study_eval(p: Protocol, out: Path, ds: str, seed: int, name: str) -> dict[str, Any] | None:
    """The study's corruption evaluation of one run (None when not done)."""
    if name.startswith("uniform soup "):
        run = seed_dir(out, ds, seed) / f"soup-{name.split()[-1]}-uniform"
    else:
        run = table1_dirs(p, out, ds, seed)[name]
    spec = eval_spec(p, ds)
    entries = load_json(run / "eval.json", {}).values()
    return next((e for e in entries if isinstance(e, dict) and e.get("spec") == spec), None)


def timing_md(out: Path) -> str:
    """Measured seconds per task kind (all invocations, OUT/timings.json)."""
    history = load_json(out / "timings.json", {})
    lines = ["| task kind | tasks | total (min) | mean (s) | measured / planned |",
             "|---|---:|---:|---:|---:|"]
    for kind in ("train", "fapft", "angles", "soup", "eval", "report"):
        rows = [h for h in history.values() if h["kind"] == kind]
        if rows:
            secs, est = sum(h["seconds"] for h in rows), sum(h["est"] for h in rows)
            lines.append(f"| {kind} | {len(rows)} | {secs / 60:.1f} | {secs / len(rows):.1f} | "
                         f"{secs / est:.2f} |")
    return "\n".join(lines) + "\n"


def write_study(p: Protocol, out: Path, status: dict[str, str], wall: float) -> Path:
    """OUT/study.md: links to the reports and the tables partialft report does not write."""
    parts = ["# CPU-scale study of partial fine-tuning\n", protocol_md(p)]
    for ds in p.datasets:
        parts += [f"## {ds}\n", "### Table 1 / Fig. 3: methods\n", table1_md(p, out, ds),
                  "### Fig. 6: FAPFT top-k and angle magnitude (test acc %)\n",
                  fig6_md(p, out, ds), "### Table 3: model soups (test acc %)\n",
                  soups_md(p, out, ds), "### Robustness: corruptions (Table 4 style)\n",
                  robust_md(p, out, ds)]
    parts += ["## Fig. 4: is the angle ranking a property of the task?\n",
              "Kendall tau between the fine-tuned-angle rankings of full runs that differ only in "
              "what the row names, per homogeneous group; 'random rankings' is the mean ± std "
              "tau of two independent random orders of that many layers.\n", tau_md(p, out),
              "## Figures and partialft reports\n", figures_md(out), "## This invocation\n",
              invocation_md(status, wall), timing_md(out)]
    path = out / "study.md"
    path.write_text("\n".join(parts))
    return path


def protocol_md(p: Protocol) -> str:
    """The protocol as one paragraph plus the JSON of its settings."""
    return ("Bundled `partialft_vit_tiny`, one recipe for every method (the demo's: AdamW, "
            "cosine, 1 warm-up epoch, batch 64, weight decay 0.05, label smoothing 0.1, no "
            "flip, fp32, 10% validation hold-out); every number is a mean ± sample std over "
            "the seeds. The protocol is described in benchmarks/study.py's docstring.\n\n"
            f"```\n{json.dumps(asdict(p), indent=1)}\n```\n")


def figures_md(out: Path) -> str:
    """Links to every report and figure under OUT/report."""
    lines = []
    for report in sorted((out / "report").glob("*/report.md")):
        rel_dir = report.parent.relative_to(out)
        figs = ", ".join(f"[{f.stem}]({rel_dir / f.name})" for f in sorted(report.parent.glob(
            "*.png")))
        lines.append(f"- [{rel_dir}]({rel_dir / 'report.md'}): {figs or 'no figures'}")
    return "\n".join(lines) + "\n"


def invocation_md(status: dict[str, str], wall: float) -> str:
    """Counts of tasks run, skipped, failed, blocked; wall time."""
    counts = {s: sum(v == s for v in status.values()) for s in
              ("ok", "skipped", "failed", "blocked")}
    failed = [n for n, s in status.items() if s in ("failed", "blocked")]
    lines = [f"Ran {counts['ok']} tasks, skipped {counts['skipped']} already done, "
             f"{counts['failed']} failed, {counts['blocked']} blocked; wall {hms(wall)}."]
    lines += [f"- not done: {n} ({status[n]})" for n in failed]
    return "\n".join(lines) + "\n"


# --- --check: the numbers docs/RESULTS.md's conclusions quote ---------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """``--check``: recompute every number RESULTS.md's study conclusions quote (study_claims)."""
    import argparse

    from study_claims import check

    parser = argparse.ArgumentParser(description=(
        "Check that every number docs/RESULTS.md's study conclusions quote is recomputed from "
        "its stored tables (study.md itself is written by benchmarks/study.py)."))
    parser.add_argument("--check", action="store_true", required=True,
                        help="recompute the quoted numbers; exit 1 and print each mismatch")
    parser.add_argument("--results", help="the RESULTS.md to check (default docs/RESULTS.md)")
    args = parser.parse_args(argv)
    problems = check(args.results)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)" if problems else "every quoted number matches the tables")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
