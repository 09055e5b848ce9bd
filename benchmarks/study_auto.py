"""Issue 23: the study's FAPFT rows rerun with ``--mode auto`` decided by validation pilots.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/study_auto.py --out runs/study-auto
    .venv/bin/python benchmarks/study_auto.py --out runs/study-auto --datasets digits --seeds 0

Per dataset (digits, the study's Fashion-MNIST subset) and seed (0-2), with the study's recipe
(benchmarks/study_grid.py: 8 epochs, lr 1e-3, top-k 4 per group):

1. ``train --method full`` (``full/``) and ``angles`` of it (``angles.json``);
2. the real pipeline, ``fapft --reference full --mode auto --topk 4`` (``fapft-auto/``), at the
   default fraction 0.25 (its pilots: ``fapft-auto/pilot-MODE/``, its final run
   ``fapft-auto/fapft/``);
3. ``train --method fapft --mode M --topk 4`` at the full schedule (``fapft-M-k4/``) for the mode
   auto did not pick: with the final run of 2, the truth the decision is scored against (which
   mode is better on the *test* split at the full schedule);
4. pilot sweeps (``--phase pilots``): ``partialft.selectors.auto.choose_mode`` at the other
   fractions of ``FRACTIONS`` (``sweep-FRACTION/pilot-MODE/``).

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
FRACTIONS = (0.125, 0.5)  # 0.25, the default, is measured by the pipeline itself (step 4)
DEFAULT_FRACTION = 0.25


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
    """The mode auto picked: from the pipeline's summary, else from its finished pilots (the
    same rule: better validation accuracy, ties small), so step 3 can start beside the final
    run."""
    summary = base / "fapft-auto" / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())["mode"]
    pilots = [base / "fapft-auto" / f"pilot-{m}" / "summary.json" for m in ("large", "small")]
    if not all(p.is_file() for p in pilots):
        return None
    large, small = (json.loads(p.read_text())["best_acc"] for p in pilots)
    return "large" if large > small else "small"


def sweep(base: Path, flags: tuple[str, ...], seed: int,
          fractions: tuple[float, ...] = FRACTIONS) -> None:
    """choose_mode at each fraction of FRACTIONS (library call, the pipeline's own code)."""
    import dataclasses

    from partialft.selectors.auto import choose_mode
    from partialft.training.config import TrainConfig
    from partialft.training.config_flags import overrides_from_args

    for fraction in fractions:
        out = base / f"sweep-{fraction:g}"
        if all((out / f"pilot-{m}" / "summary.json").is_file() for m in ("large", "small")):
            continue
        ns = _parse_train(["train", *recipe(flags, seed), "--method", "fapft", "--angles",
                           str(base / "angles.json"), "--topk", TOPK, "--mode", "auto"])
        cfg = TrainConfig(**overrides_from_args(ns))
        t0 = time.perf_counter()
        choose_mode(dataclasses.replace(cfg, out=str(out)), out, fraction=fraction)
        print(f"  [{time.perf_counter() - t0:6.1f} s] sweep {fraction:g}", flush=True)


def _parse_train(argv: list[str]):
    from partialft.cli import build_parser

    return build_parser().parse_args(argv)


def auto_pipeline(base: Path, flags: tuple[str, ...], seed: int) -> None:
    out = base / "fapft-auto"
    if not (out / "summary.json").is_file():
        cli(["fapft", *recipe(flags, seed), "--reference", str(base / "full"), "--topk", TOPK,
             "--mode", "auto", "--pilot-fraction", f"{DEFAULT_FRACTION:g}", "--out", str(out)])


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


def sweep_row(base: Path) -> dict:
    """The decision at the other fractions, where measured."""
    out = {}
    for fraction in FRACTIONS:
        pilots = {m: _read(base / f"sweep-{fraction:g}" / f"pilot-{m}" / "summary.json")
                  for m in ("large", "small")}
        if all(pilots.values()):
            acc = {m: s["best_acc"] for m, s in pilots.items()}
            out[f"{fraction:g}"] = {"val": acc, "chosen": "large" if acc["large"] > acc[
                "small"] else "small", "wall_s": sum(s["wall_s"] for s in pilots.values())}
    return out


def table(out: Path, datasets: list[str], seeds: list[int]) -> None:
    rows, lines = {}, [
        "| dataset | seed | pilot val large | pilot val small | auto | test large | test small "
        "| better on test | right? | pilot cost (s) | x full FT wall | pilot epochs (x schedule) "
        "| full FT test | full FT wall (s) |", "|---|---:|" + "---:|" * 12]
    for ds in datasets:
        for seed in seeds:
            base = out / ds / f"s{seed}"
            r = seed_row(base)
            if r is None:
                continue
            r["sweep"] = sweep_row(base)
            rows[f"{ds}/s{seed}"] = r
            t, pv, c = r["test"], r["pilot_val"], r["cost"]
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(f"| {ds} | {seed} | {fmt(pv['large'])} | {fmt(pv['small'])} | "
                         f"{r['chosen']} | {fmt(t['large'])} | {fmt(t['small'])} | "
                         f"{r['better_on_test'] or '-'} | "
                         f"{'-' if r['hit'] is None else 'yes' if r['hit'] else 'no'} | "
                         f"{c['wall_s']:.1f} | {c.get('x_full_wall', float('nan')):.2f} | "
                         f"{c['x_full_epochs']:.2f} | {fmt(r['full_test'])} | "
                         f"{r['full_wall_s']:.1f} |")
    hits = [r["hit"] for r in rows.values() if r["hit"] is not None]
    lines.append(f"\nauto picked the mode better on the test split in {sum(hits)} of "
                 f"{len(hits)} dataset-seeds.")
    (out / "auto.md").write_text("\n".join(lines) + "\n")
    (out / "auto.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/study-auto")
    ap.add_argument("--datasets", default="digits,fashion-mnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fractions", default=",".join(f"{f:g}" for f in FRACTIONS),
                    help="--phase pilots: the pilot fractions to measure")
    ap.add_argument("--phase", default="all", choices=["fixed", "pilots", "auto", "all",
                                                        "table"])
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
            if args.phase == "pilots":
                sweep(base, flags, seed, tuple(map(float, args.fractions.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
