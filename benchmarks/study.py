"""The paper's experiment grid at CPU scale: one command, resumable (issue 17, part A).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/study.py --out runs/study   # the whole study
    .venv/bin/python benchmarks/study.py --plan                               # grid and time only
    .venv/bin/python benchmarks/study.py --smoke --out /tmp/study-smoke       # every stage, ~30 s

Every experiment is a call of the public CLI, ``partialft.cli.main([...])``: ``train``,
``fapft``, ``angles``, ``soup``, ``eval`` and ``report``. Each task writes one run dir (or
angles file, eval.json entry, report dir) under ``--out``; a rerun skips what is finished (a run
dir with summary.json, an angles file, an eval.json entry with the same spec, a soup's
summary.json) and resumes an interrupted run (``--resume`` when it left a resume point, else
``--overwrite`` of partialft's own half-written dir). The reports and ``study.md`` are rewritten
every time from what is on disk, so a rerun of a finished study only rewrites the same tables.

Parallelism: **yes**. Two worker processes (``--jobs 2``, one per core; spawned, each recycled
after 40 tasks) take the independent tasks in dependency order, longest first; every run has
``--threads 1`` and the workers ``OMP_NUM_THREADS=1``, so two runs never fight over cores. A
worker runs ``partialft.cli.main`` in-process (importing torch once per worker instead of once per
run, about 6 s saved per task) with its output in ``OUT/logs/NAME.log``. Progress after each task:
tasks done/total, elapsed, and the remaining time: the plan's estimate of the tasks left, scaled
per task kind by measured/planned seconds of the tasks of that kind already run (this invocation
and earlier ones, ``OUT/timings.json``).

Code: this file (options, ``--plan``, main), ``study_grid.py`` (the protocol, cost model and
tasks), ``study_runner.py`` (worker processes, resuming, progress), ``study_tables.py``
(study.md), ``study_data.py`` (the Fashion-MNIST subset).

Protocol (fixed before the study is run; not tuned toward the paper's conclusions)
---------------------------------------------------------------------------------
Model: the bundled ``partialft_vit_tiny`` (fractal-pretrained ViT, 12 blocks = 24 residual layers
in two homogeneous groups of 12, 32x32 input). One recipe for every method, as in the paper
("each partial fine-tuning utilizes the same hyper-parameters as full fine-tuning"; the PEFT
baselines get it too, where the paper grid-searched theirs): the demo's recipe (the shipped
``digits_demo`` config): 8 epochs, 1 warm-up epoch, batch 64, AdamW lr 1e-3, weight decay 0.05,
label smoothing 0.1, no flip, fp32, 10% of the training split held out for validation
(greedy soups choose on it; test accuracy is the reported number). Seeds 0, 1, 2.

Datasets:

- ``digits`` (scikit-learn, 1,797 images): partialft's stratified split, **seeded by the run's
  seed**: test 360, val 144, train 1,293. The test images therefore differ between seeds (so
  the std includes the test-set draw), and soups only mix runs of one seed (a run of another seed
  trained on this seed's test images).
- ``fashion-mnist``: a **fixed subset this script defines**: the first 200 images of each class
  in the order of the official training file (2,000 images; ``OUT/data/fashion-mnist-200pc/``,
  idx files written from Debian's ``dataset-fashion-mnist``, the indices in its SUBSET.json), of
  which partialft's seeded 10% hold-out takes 200 for validation (train 1,800); the **whole
  official test set (10,000 images)** for test accuracy. Passed as ``--data-dir``, not
  ``--max-per-split``, because that option would cut the test set too.

Grid, per dataset and seed (``--plan`` prints the counts and the time estimate):

- Table 1 / Fig. 3: ``train --method`` full, linear, attn, ffn, first/last-half-attn,
  first/last-half-ffn, first/last-half-blocks, adapter, vpt-deep, ssf, lora (14 runs), and FAPFT
  through ``fapft --reference FULL --mode auto`` (the linear probe picks large or small; top-k is
  partialft's Table 7 default, 4 per group). Test accuracy mean ± std, trainable parameters and
  training time (the summary's ``wall_s``: the training loop, without the final test pass).
- Fig. 6: ``partialft angles`` of the full run (same seed) -> ``train --method fapft`` with top-k
  1..6 per group in mode large and in mode small (12 runs); the auto run above is the third line.
- Fig. 4: angles of full runs that differ only in seed (3 per dataset), only in learning rate
  (5e-4, 7e-4, 1e-3, 1.4e-3, 2e-3; per seed), only in epochs (4, 8, 12; per seed), and across the
  two datasets (same seed and recipe: the paper's Fig. 4c contrast). ``study.md`` gives the
  Kendall tau of every pair per homogeneous group (and the spread random rankings would give);
  ``report/fig4-*`` draw the rank heatmaps.
- Table 3: per seed, uniform and greedy soups (``partialft soup [--greedy]``) of 5 full runs at
  the 5 learning rates above (Soup-FFT) and of the 5 FAPFT runs with top-k 1..5 (the paper's
  "same hyper-parameters, only the number of layers"), for mode large and for mode small; the
  soup's summary carries the paper's parameter accounting (sum over ingredients).
- Robustness (Table 4 style): ``eval --corruptions all --severities 1-5 --max-images 100``: the
  15 ImageNet-C benchmark corruptions at 5 severities on the **first 100 test images** (of each
  seed's digits test split; of the official Fashion-MNIST test file), for the 15 Table 1 runs and
  the 3 uniform soups of every seed: clean accuracy on those images, mean corruption error and
  relative corruption error (the full test set would take ~100x longer: 0.3 s per image).

Outputs: ``OUT/report/table1`` (``partialft report`` of the Table 1 runs: Table 1 and the
robustness table, Figs. 1 and 3), ``OUT/report/fig6`` (full + FAPFT runs: Fig. 6; the auto run
repeats the configuration and seed of one fixed-mode run, so the report lists it as a duplicate),
``OUT/report/table3`` (the soups: one row per soup recipe over the seeds, named by its
ingredients), ``OUT/report/fig4-*`` (the angles files of one Fig. 4 family each: heatmaps), and
``OUT/study.md`` for what the report does not give: Table 1 with training time, Fig. 6 as a
table, Table 3 beside its ingredients' best single run, robustness as mean ± std, the
Kendall-tau table, the measured time per task kind.

Budget: 150 min on this 2-core machine with nothing else running; ``--plan`` estimates the study
at **118 min** on 2 workers (400 tasks, 236 worker-min). The cost model (constants below) was
measured 2026-11-24 on this machine, one thread per run, while other engineers' jobs ran beside
(load average 1-2 on 2 cores): full fine-tuning 3.3 ms per training image (digits, 2 epochs:
8.2-8.4 s for 2 x 1,293 images), the other methods relative to it (``FACTOR``, from 2-epoch runs
of each: linear 0.35, last-half strategies 0.6-0.75, attn/ffn 0.8-0.85, adapter 0.75, ssf 1.3,
lora 1.05, vpt-deep 3.2, fapft 0.9), inference 1.1 ms per image (10,000 test images in 11-12 s),
the 15 corruptions 55 ms per image and severity (``CORRUPT_MS``; glass_blur 29 and frost 13 of
them), worker start ~6 s. Check at the study's own scale: 11 real-protocol tasks (digits and
Fashion full, vpt-deep, last-half-ffn, FAPFT large k3 / small k6 / auto, angles, corruption
evals) run two at a time by this scheduler at load average 1.4-2.1 took 0.93x their planned
seconds in total (full runs 1.17-1.38x, partial runs 0.78-0.90x, evals 0.88-0.95x). The estimate
adds no margin of its own; the margin is the ~32 min between it and 150. The whole study,
2026-11-24 on this machine (lightly shared): 400 tasks, 185 worker-min measured, about 93 min
on the 2 workers (0.78x the plan); results in docs/RESULTS.md.

``--smoke``: the same pipeline on 128 images per split, one seed, 1 epoch, full + attn (+ FAPFT
auto), top-k 1-2, 2 learning rates, 1 extra epoch count, gaussian_noise at severity 3 on 16
images; tests/test_study.py runs it twice (the second run must skip everything).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, replace
from pathlib import Path

from study_data import make_fashion_subset
from study_grid import (
    KIND_ORDER,
    SMOKE,
    STUDY,
    TASKS_PER_WORKER,
    WORKER_S,
    Protocol,
    Task,
    build_grid,
    dataset,
    fashion_dir,
    is_done,
    report_tasks,
)
from study_runner import Scheduler
from study_tables import write_study

# --- the plan ------------------------------------------------------------------------------


def print_plan(p: Protocol, tasks: list[Task], jobs: int, out: Path) -> None:
    """The grid (tasks of each kind), the protocol and the estimated time; runs nothing."""
    print(f"study plan: out {out}, {jobs} worker(s), one torch thread each")
    print("protocol: " + json.dumps(asdict(p)))
    for ds in p.datasets:
        d = dataset(p, ds, out)
        print(f"  {ds}: train {d.n_train}, val {d.n_val}, test {d.n_test} images per seed")
    groups: dict[str, list[Task]] = {}
    for t in sorted(tasks, key=lambda t: KIND_ORDER.index(t.kind)):
        groups.setdefault(t.group, []).append(t)
    units = len(p.datasets) * len(p.seeds)
    print(f"\n{'tasks':<40} {'per dataset+seed':>16} {'total':>6} {'worker-min':>11}")
    for group, members in groups.items():
        per = f"{len(members) / units:g}" if group != "reports" else "-"
        print(f"{group:<40} {per:>16} {len(members):>6} {sum(t.est for t in members) / 60:>11.1f}")
    starts = (len(tasks) // TASKS_PER_WORKER + jobs) * WORKER_S
    total = sum(t.est for t in tasks) + starts
    done = sum(is_done(t) for t in tasks)
    print(f"{'worker starts (imports)':<40} {'':>16} {'':>6} {starts / 60:>11.1f}")
    print(f"\ntotal {len(tasks)} tasks, {total / 60:.1f} worker-min -> about "
          f"{total / jobs / 60:.0f} min on {jobs} worker(s) (budget 150 min); {done} of them "
          f"already done under {out}")


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description="The paper's experiment grid at CPU scale "
                                 "(resumable). See the module docstring for the protocol.")
    ap.add_argument("--out", default="runs/study", help="study folder (default runs/study)")
    ap.add_argument("--plan", action="store_true", help="print the grid and time estimate only")
    ap.add_argument("--smoke", action="store_true", help="tiny protocol exercising every stage")
    ap.add_argument("--seeds", default=None, help="comma list (default 0,1,2; smoke 0)")
    ap.add_argument("--datasets", default=None,
                    help="comma list of digits, fashion-mnist (default both; smoke digits)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2 = cores)")
    return ap.parse_args(argv)


def protocol_from(args: argparse.Namespace) -> Protocol:
    """The protocol the options ask for."""
    p = SMOKE if args.smoke else STUDY
    if args.seeds:
        if not all(s.strip().isdigit() for s in args.seeds.split(",") if s.strip()):
            raise SystemExit(f"--seeds {args.seeds!r}: give whole numbers, e.g. 0,1,2.")
        p = replace(p, seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()))
    if args.datasets:
        p = replace(p, datasets=tuple(d.strip() for d in args.datasets.split(",") if d.strip()))
    if not p.seeds or not p.datasets or args.jobs < 1:
        raise SystemExit("need at least one seed, one dataset and --jobs >= 1.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Plan, or run the study (skipping what is done) and write the reports and study.md."""
    args = parse_args(argv)
    p, out = protocol_from(args), Path(args.out).resolve()
    tasks = build_grid(p, out)
    if args.plan:
        print_plan(p, tasks + report_tasks(p, out), args.jobs, out)
        return 0
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # inherited by workers
    if "fashion-mnist" in p.datasets:
        make_fashion_subset(p.fashion_per_class, fashion_dir(p, out))
    start = time.monotonic()
    try:
        status = Scheduler(tasks + report_tasks(p, out), out, args.jobs).run()
    except (KeyboardInterrupt, BrokenProcessPool):
        print("stopped; rerun the same command to resume (finished work is kept)", flush=True)
        return 130
    path = write_study(p, out, status, time.monotonic() - start)
    bad = [n for n, s in status.items() if s in ("failed", "blocked")]
    print(f"wrote {path} and {out / 'report'}/; {len(bad)} task(s) not done", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

