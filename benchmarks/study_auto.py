"""Issue 23: the study's FAPFT rows rerun with ``--mode auto`` decided by validation pilots.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/study_auto.py --out runs/study-auto
    .venv/bin/python benchmarks/study_auto.py --out runs/study-auto --datasets digits --seeds 0

Per dataset (digits, the study's Fashion-MNIST subset) and seed (0-2), with the study's recipe
(benchmarks/study_grid.py: 8 epochs, lr 1e-3, top-k 4 per group):

1. ``train --method full`` (``full/``) and ``angles`` of it (``angles.json``);
2. the real pipeline, ``fapft --reference full --mode auto --topk 4`` (``fapft-auto/``), at the
   default ``--pilot-fraction`` (its pilots: ``fapft-auto/pilot-MODE/``; its final run
   ``fapft-auto/fapft/`` continues the chosen pilot);
3. ``train --method fapft --mode M --topk 4`` at the full schedule (``fapft-M-k4/``) for the mode
   auto did not pick: with the final run of 2, the truth the decision is scored against (which
   mode is better on the *test* split at the full schedule).

A pilot is the start of a run in its mode (same schedule, training is deterministic on the CPU),
so the decision at every other fraction e/8 is read from the two full-schedule runs' per-epoch
validation accuracies (``prefix`` in ``auto.json``): no further training. The table checks that
the final run's first epochs are its pilot's.

Everything is resumable: a finished output (summary.json / angles.json) is skipped.
``--phase table`` writes ``auto.md`` and ``auto.json`` under ``--out`` from what is on disk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_data import make_fashion_subset  # noqa: E402
from study_grid import MODEL, QUIET, RECIPE, STUDY, bundled_weights, dataset  # noqa: E402

TOPK = "4"


def cli(argv: list[str]) -> None:
    """One partialft command in this process (exit code 0 or raise)."""
    from partialft.cli import main

    t0 = time.perf_counter()
    code = main(argv)
    print(f"  [{time.perf_counter() - t0:6.1f} s] partialft {' '.join(argv[:1])} -> "
          f"{argv[argv.index('--out') + 1] if '--out' in argv else ''}", flush=True)
    if code != 0:
        raise SystemExit(f"partialft {' '.join(argv)} exited {code}")


def recipe(flags: tuple[str, ...], seed: int) -> list[str]:
    return [*RECIPE, *flags, "--epochs", str(STUDY.epochs), "--lr", f"{STUDY.lr:g}",
            "--seed", str(seed), *QUIET]


def full_run(base: Path, flags: tuple[str, ...], seed: int) -> None:
    """Full fine-tuning and its angles."""
    if not (base / "full" / "summary.json").is_file():
        cli(["train", *recipe(flags, seed), "--method", "full", "--out", str(base / "full"),
             *(["--resume"] if (base / "full").is_dir() else [])])
    if not (base / "angles.json").is_file():
        cli(["angles", str(bundled_weights()), str(base / "full"), "--model", MODEL,
             "--num-classes", "10", "--out", str(base / "angles.json")])


def fixed_runs(base: Path, flags: tuple[str, ...], seed: int) -> None:
    """FAPFT top-k 4 at the full schedule in the mode auto did not pick (the picked one is
    ``fapft-auto/fapft``; without it, both modes)."""
    chosen = _chosen(base)
    for mode in ("large", "small"):
        out = base / f"fapft-{mode}-k{TOPK}"
        if mode != chosen and not (out / "summary.json").is_file():
            cli(["train", *recipe(flags, seed), "--method", "fapft", "--angles",
                 str(base / "angles.json"), "--topk", TOPK, "--mode", mode, "--out", str(out),
                 *(["--resume"] if out.is_dir() else [])])


def _chosen(base: Path) -> str | None:
    """The mode auto picked (None before the pipeline finished: both modes are trained)."""
    summary = base / "fapft-auto" / "summary.json"
    return json.loads(summary.read_text())["mode"] if summary.is_file() else None


def auto_pipeline(base: Path, flags: tuple[str, ...], seed: int) -> None:
    out = base / "fapft-auto"
    if not (out / "summary.json").is_file():
        cli(["fapft", *recipe(flags, seed), "--reference", str(base / "full"), "--topk", TOPK,
             "--mode", "auto", "--out", str(out)])


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def seed_row(base: Path) -> dict | None:
    """One dataset-seed: pilots, decision, cost, and both modes at the full schedule."""
    pipe = _read(base / "fapft-auto" / "summary.json")
    full = _read(base / "full" / "summary.json")
    if pipe is None or full is None:
        return None
    dec = pipe["mode_decision"]
    final = {dec["mode"]: _read(base / "fapft-auto" / "fapft" / "summary.json")}
    other = "small" if dec["mode"] == "large" else "large"
    final[other] = _read(base / f"fapft-{other}-k{TOPK}" / "summary.json")
    test = {m: (s or {}).get("test_acc") for m, s in final.items()}
    better = (None if None in test.values() else
              "tie" if test["large"] == test["small"] else max(test, key=test.get))
    return {"pilot_val": {m: p["val_acc"] for m, p in dec["pilots"].items()},
            "chosen": dec["mode"], "cost": dec["cost"], "test": test,
            "val": {m: (s or {}).get("best_acc") for m, s in final.items()},
            "better_on_test": better, "hit": None if better is None else
            better in (dec["mode"], "tie"), "full_test": full["test_acc"],
            "full_wall_s": full["wall_s"],
            "final_wall_s": {m: (s or {}).get("wall_s") for m, s in final.items()}}


def _epochs(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.is_file() else []


def prefix_row(base: Path, chosen: str) -> dict:
    """The decision pilots of e epochs would take, for every e: best validation accuracy of
    each mode's full-schedule run over its first e epochs (ties: small); and whether the final
    run's first epochs are its pilot's (the pilot is the start of the run)."""
    other = "small" if chosen == "large" else "large"
    runs = {chosen: base / "fapft-auto" / "fapft", other: base / f"fapft-{other}-k{TOPK}"}
    curves = {m: [r["val_acc"] for r in _epochs(d)] for m, d in runs.items()}
    pilot = _epochs(base / "fapft-auto" / f"pilot-{chosen}")
    final = _epochs(runs[chosen])
    out = {"continued": bool(pilot) and final[:len(pilot)] == pilot, "by_epochs": {}}
    for e in range(1, min(len(c) for c in curves.values()) + 1):
        best = {m: max(c[:e]) for m, c in curves.items()}
        out["by_epochs"][e] = {"val": best, "chosen": "large" if best["large"] > best[
            "small"] else "small"}
    return out


def table(out: Path, datasets: list[str], seeds: list[int]) -> None:
    rows, lines = {}, [
        "| dataset | seed | pilot val large | pilot val small | auto | test large | test small "
        "| better on test | right? | continued? | extra: other pilot (s) | x full FT wall "
        "| extra epochs (x schedule) | full FT test | full FT wall (s) |",
        "|---|---:|" + "---:|" * 13]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for ds in datasets:
        for seed in seeds:
            base = out / ds / f"s{seed}"
            r = seed_row(base)
            if r is None:
                continue
            r["prefix"] = prefix_row(base, r["chosen"])
            rows[f"{ds}/s{seed}"] = r
            t, pv, c = r["test"], r["pilot_val"], r["cost"]
            lines.append(f"| {ds} | {seed} | {fmt(pv['large'])} | {fmt(pv['small'])} | "
                         f"{r['chosen']} | {fmt(t['large'])} | {fmt(t['small'])} | "
                         f"{r['better_on_test'] or '-'} | "
                         f"{'-' if r['hit'] is None else 'yes' if r['hit'] else 'no'} | "
                         f"{'yes' if r['prefix']['continued'] else 'no'} | "
                         f"{c['extra_wall_s']:.1f} | {c.get('x_full_wall', float('nan')):.2f} | "
                         f"{c['x_full_epochs']:.2f} | {fmt(r['full_test'])} | "
                         f"{r['full_wall_s']:.1f} |")
    hits = [r["hit"] for r in rows.values() if r["hit"] is not None]
    lines.append(f"\nauto picked the mode better on the test split in {sum(hits)} of "
                 f"{len(hits)} dataset-seeds.\n")
    lines += _prefix_table(rows)
    (out / "auto.md").write_text("\n".join(lines) + "\n")
    (out / "auto.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


def _prefix_table(rows: dict) -> list[str]:
    """Right decisions by pilot length (epochs of the schedule), from the full-schedule runs."""
    scored = [r for r in rows.values() if r["better_on_test"] is not None]
    if not scored:
        return []
    epochs = sorted({int(e) for r in scored for e in r["prefix"]["by_epochs"]})
    lines = ["| pilot epochs | " + " | ".join(rows_name(rows, r) for r in scored)
             + " | right |", "|---:|" + "---|" * (len(scored) + 1)]
    for e in epochs:
        picks = [r["prefix"]["by_epochs"].get(e, r["prefix"]["by_epochs"].get(str(e)))
                 for r in scored]
        right = sum(p is not None and p["chosen"] == r["better_on_test"] or
                    r["better_on_test"] == "tie" for p, r in zip(picks, scored))
        lines.append(f"| {e} | " + " | ".join("-" if p is None else p["chosen"] for p in picks)
                     + f" | {right} of {len(scored)} |")
    return lines


def rows_name(rows: dict, row: dict) -> str:
    return next(k for k, v in rows.items() if v is row)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/study-auto")
    ap.add_argument("--datasets", default="digits,fashion-mnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--phase", default="all", choices=["fixed", "auto", "all", "table"])
    args = ap.parse_args()
    out = Path(args.out)
    if args.phase == "table":
        table(out, args.datasets.split(","), [int(s) for s in args.seeds.split(",")])
        return 0
    for ds in args.datasets.split(","):
        if ds == "fashion-mnist":
            make_fashion_subset(STUDY.fashion_per_class,
                                out / "data" / f"fashion-mnist-{STUDY.fashion_per_class}pc")
        flags = dataset(STUDY, ds, out).flags
        for seed in map(int, args.seeds.split(",")):
            base = out / ds / f"s{seed}"
            print(f"{ds} seed {seed}", flush=True)
            full_run(base, flags, seed)
            if args.phase in ("auto", "all"):
                auto_pipeline(base, flags, seed)
            if args.phase in ("fixed", "all"):
                fixed_runs(base, flags, seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
