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
at **118 min** on 2 workers (399 tasks, 236 worker-min). The cost model (constants below) was
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
adds no margin of its own; the margin is the ~32 min between it and 150.

``--smoke``: the same pipeline on 128 images per split, one seed, 1 epoch, full + attn (+ FAPFT
auto), top-k 1-2, 2 learning rates, 1 extra epoch count, gaussian_noise at severity 3 on 16
images; tests/test_study.py runs it twice (the second run must skip everything).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.util
import itertools
import json
import math
import multiprocessing as mp
import os
import shlex
import statistics
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

MODEL = "partialft_vit_tiny"
TABLE1 = ("full", "linear", "attn", "ffn", "first-half-attn", "last-half-attn", "first-half-ffn",
          "last-half-ffn", "first-half-blocks", "last-half-blocks", "adapter", "vpt-deep", "ssf",
          "lora")
MODES = ("large", "small")
AUTO = "fapft-auto"  # the fapft pipeline dir; its run dir is AUTO/fapft
RECIPE = ("--model", MODEL, "--img-size", "32", "--warmup-epochs", "1", "--batch-size", "64",
          "--weight-decay", "0.05", "--label-smoothing", "0.1", "--hflip", "0", "--amp", "no",
          "--val-fraction", "0.1")
QUIET = ("--threads", "1", "--no-progress", "--log-with", "none")
FASHION_SRC = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DIGITS_SIZE, DIGITS_TEST = 1797, 0.2
FASHION_TEST = 10_000
TASKS_PER_WORKER = 40
KIND_ORDER = ("train", "fapft", "angles", "soup", "eval", "report")  # --plan's line order

# --- the cost model (seconds on one core; measured, see the module docstring) ----------------
TRAIN_MS = 3.3  # full fine-tuning, per training image
INFER_MS = 1.1  # per evaluated image (val each epoch, test at the end, soups, eval)
RUN_S = 1.5  # per run in a warm worker: model, data, writing
PROBE_S = 5.0  # --mode auto's linear probe
ANGLES_S = 2.5
REPORT_S = 6.0
WORKER_S = 6.0  # a worker's imports (torch, timm, accelerate), once per TASKS_PER_WORKER tasks
FACTOR = {"full": 1.0, "linear": 0.35, "attn": 0.8, "ffn": 0.85, "first-half-attn": 0.95,
          "last-half-attn": 0.6, "first-half-ffn": 0.85, "last-half-ffn": 0.6,
          "first-half-blocks": 1.0, "last-half-blocks": 0.75, "adapter": 0.75, "vpt-deep": 3.2,
          "ssf": 1.3, "lora": 1.05, "fapft": 0.9}
# per image and severity, 32 px, measured with partialft.data.corruptions.corrupt_batch
CORRUPT_MS = {"gaussian_noise": 1.6, "shot_noise": 0.6, "impulse_noise": 0.4,
              "defocus_blur": 0.6, "glass_blur": 28.8, "motion_blur": 1.4, "zoom_blur": 3.1,
              "snow": 1.6, "frost": 13.2, "fog": 0.8, "brightness": 1.2, "contrast": 0.1,
              "elastic_transform": 1.0, "pixelate": 0.1, "jpeg_compression": 0.5}
OTHER_CORRUPTION_MS = 5.0


@dataclass(frozen=True)
class Protocol:
    """Everything that fixes the study's numbers (``--plan`` prints it, study.md records it)."""

    epochs: int = 8
    lr: float = 1e-3
    soup_lrs: tuple[float, ...] = (5e-4, 7e-4, 1e-3, 1.4e-3, 2e-3)
    epoch_variants: tuple[int, ...] = (4, 12)
    methods: tuple[str, ...] = TABLE1
    topks: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    soup_topks: tuple[int, ...] = (1, 2, 3, 4, 5)
    corruptions: str = "all"
    severities: str = "1-5"
    corrupt_images: int = 100
    fashion_per_class: int = 200
    max_per_split: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    datasets: tuple[str, ...] = ("digits", "fashion-mnist")


STUDY = Protocol()
SMOKE = Protocol(epochs=1, soup_lrs=(1e-3, 2e-3), epoch_variants=(2,), methods=("full", "attn"),
                 topks=(1, 2), soup_topks=(1, 2), corruptions="gaussian_noise", severities="3",
                 corrupt_images=16, fashion_per_class=20, max_per_split=128, seeds=(0,),
                 datasets=("digits",))


@dataclass(frozen=True)
class Data:
    """One dataset of the study: its CLI flags and split sizes (for the cost model)."""

    name: str
    flags: tuple[str, ...]
    n_train: int
    n_val: int
    n_test: int


@dataclass
class Task:
    """One partialft invocation: what it writes (``out``), needs first (``deps``), costs."""

    name: str
    kind: str  # train, fapft, angles, soup, eval, report
    group: str  # the --plan line it counts under
    argv: list[str]
    out: Path
    est: float
    deps: tuple[str, ...] = ()
    spec: dict[str, Any] | None = None  # eval: the eval.json spec that marks it done
    inputs: tuple[Path, ...] = ()  # report: the inputs it reads (those present are passed)


# --- layout --------------------------------------------------------------------------------


def seed_dir(out: Path, ds: str, seed: int) -> Path:
    """Where the runs of one dataset and seed live."""
    return out / ds / f"s{seed}"


def full_name(p: Protocol, lr: float, epochs: int) -> str:
    """Run dir name of a full fine-tuning run: 'full' for the main recipe, else what differs."""
    if lr == p.lr and epochs == p.epochs:
        return "full"
    return f"full-lr{lr:g}" if epochs == p.epochs else f"full-e{epochs}"


def angles_file(out: Path, ds: str, seed: int, lr: float, epochs: int) -> Path:
    """The Fig. 4 angles file of one full run (its stem labels the heatmap column)."""
    return out / ds / "angles" / f"{ds}-s{seed}-lr{lr:g}-e{epochs}.json"


def table1_dirs(p: Protocol, out: Path, ds: str, seed: int) -> dict[str, Path]:
    """Table 1 row name -> run dir, for one dataset and seed."""
    base = seed_dir(out, ds, seed)
    return {**{m: base / m for m in p.methods}, "fapft (auto)": base / AUTO / "fapft"}


def soup_families(p: Protocol, out: Path, ds: str, seed: int) -> dict[str, list[Path]]:
    """Soup family name -> its ingredient run dirs, for one dataset and seed."""
    base = seed_dir(out, ds, seed)
    fams = {"fft": [base / full_name(p, lr, p.epochs) for lr in p.soup_lrs]}
    for mode in MODES:
        fams[f"fapft-{mode}"] = [base / f"fapft-{mode}-k{k}" for k in p.soup_topks]
    return fams


def bundled_weights() -> Path:
    """The bundled backbone's pretrained weights file (found without importing torch)."""
    spec = importlib.util.find_spec("partialft")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("partialft is not installed in this Python; use .venv/bin/python.")
    root = Path(list(spec.submodule_search_locations)[0])
    return root / "models" / "weights" / f"{MODEL}.safetensors"


# --- datasets ------------------------------------------------------------------------------


def dataset(p: Protocol, name: str, out: Path) -> Data:
    """The study's flags and split sizes of dataset ``name``."""
    cut = p.max_per_split or 10**9
    mps = ("--max-per-split", str(p.max_per_split)) if p.max_per_split else ()
    if name == "digits":
        test = math.ceil(DIGITS_SIZE * DIGITS_TEST)
        val = math.ceil((DIGITS_SIZE - test) * 0.1)
        sizes = (DIGITS_SIZE - test - val, val, test)
        return Data(name, ("--dataset", name, *mps), *(min(n, cut) for n in sizes))
    if name == "fashion-mnist":
        total = 10 * p.fashion_per_class
        val = math.ceil(total * 0.1)
        flags = ("--dataset", name, "--data-dir", str(fashion_dir(p, out)), *mps)
        return Data(name, flags, *(min(n, cut) for n in (total - val, val, FASHION_TEST)))
    raise SystemExit(f"dataset {name!r} is not part of the study; use digits, fashion-mnist.")


def fashion_dir(p: Protocol, out: Path) -> Path:
    """Where the study's fixed Fashion-MNIST subset is written."""
    return out / "data" / f"fashion-mnist-{p.fashion_per_class}pc"


def read_idx_gz(path: Path) -> Any:
    """An unsigned-byte idx file (gzipped or not) as a NumPy array."""
    import numpy as np

    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(shape)


def write_idx(path: Path, array: Any) -> None:
    """Write ``array`` (uint8) as an uncompressed idx file, atomically."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big")
                                                   for n in array.shape)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(header + array.tobytes())
    tmp.replace(path)


def make_fashion_subset(per_class: int, dest: Path) -> None:
    """Write the study's Fashion-MNIST subset (first ``per_class`` of each class, all test)."""
    import numpy as np

    marker = dest / "SUBSET.json"
    if marker.is_file():
        return
    src = {k: [FASHION_SRC / f"{n}.gz" for n in names] for k, names in FASHION_FILES.items()}
    if not all(f.is_file() for files in src.values() for f in files):
        raise SystemExit(f"Fashion-MNIST idx files not found under {FASHION_SRC}: run "
                         "'apt-get install -y dataset-fashion-mnist', or leave the dataset out "
                         "with --datasets digits.")
    dest.mkdir(parents=True, exist_ok=True)
    images, labels = (read_idx_gz(f) for f in src["train"])
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))
    write_idx(dest / FASHION_FILES["train"][0], images[keep])
    write_idx(dest / FASHION_FILES["train"][1], labels[keep])
    for f, name in zip(src["test"], FASHION_FILES["test"]):
        write_idx(dest / name, read_idx_gz(f))
    info = {"source": str(FASHION_SRC), "rule": f"first {per_class} of each class, file order",
            "train_indices": keep.tolist(), "test": "all 10,000 official test images"}
    marker.write_text(json.dumps(info) + "\n")


# --- the grid ------------------------------------------------------------------------------


def train_est(d: Data, epochs: int, method: str) -> float:
    """Planned seconds of one training run."""
    per_epoch = d.n_train * TRAIN_MS * FACTOR.get(method, 1.0) + d.n_val * INFER_MS
    return RUN_S + (epochs * per_epoch + d.n_test * INFER_MS) / 1000


def corruption_names(text: str) -> list[str]:
    """The corruptions ``eval --corruptions TEXT`` applies (for the cost model)."""
    if text == "all":
        return list(CORRUPT_MS)
    return [n.strip() for n in text.split(",") if n.strip()]


def severity_count(text: str) -> int:
    """How many severities '1-5', '3' or '1,3,5' names."""
    if "-" in text:
        lo, hi = text.split("-")
        return int(hi) - int(lo) + 1
    return len([s for s in text.split(",") if s.strip()])


def eval_est(p: Protocol, d: Data) -> float:
    """Planned seconds of one corruption evaluation."""
    names, sev = corruption_names(p.corruptions), severity_count(p.severities)
    per_image = sum(CORRUPT_MS.get(n, OTHER_CORRUPTION_MS) for n in names) * sev
    per_image += (1 + len(names) * sev) * INFER_MS
    return RUN_S + min(p.corrupt_images, d.n_test) * per_image / 1000


def soup_est(d: Data, n: int, greedy: bool) -> float:
    """Planned seconds of one soup (load, average, evaluate val and test)."""
    passes = d.n_val * (n if greedy else 1) + d.n_test
    return RUN_S + 0.3 * n + passes * INFER_MS / 1000


def train_task(p: Protocol, d: Data, seed: int, out: Path, name: str, method: str,
               extra: Sequence[str] = (), lr: float | None = None, epochs: int | None = None,
               group: str = "Table 1 / Fig. 3 runs", deps: tuple[str, ...] = ()) -> Task:
    """A ``partialft train`` run of the study's recipe."""
    lr, epochs = lr or p.lr, epochs or p.epochs
    path = seed_dir(out, d.name, seed) / name
    argv = ["train", *RECIPE, *d.flags, "--epochs", str(epochs), "--lr", f"{lr:g}", "--seed",
            str(seed), "--method", method, *extra, *QUIET, "--out", str(path)]
    return Task(rel(out, path), "train", group, argv, path, train_est(d, epochs, method), deps)


def rel(out: Path, path: Path) -> str:
    """A task's name: its output's path under --out."""
    return str(path.relative_to(out))


def full_tasks(p: Protocol, d: Data, seed: int, out: Path) -> list[Task]:
    """Full fine-tuning runs (main recipe, other learning rates, other epochs) and their angles."""
    tasks = []
    settings = [(lr, p.epochs) for lr in dict.fromkeys((p.lr, *p.soup_lrs))]
    settings += [(p.lr, e) for e in p.epoch_variants]
    for lr, epochs in settings:
        name = full_name(p, lr, epochs)
        group = ("Table 1 / Fig. 3 runs" if name == "full" else "full, other lr (Table 3, Fig. 4)"
                 if epochs == p.epochs else "full, other epochs (Fig. 4)")
        run = train_task(p, d, seed, out, name, "full", lr=lr, epochs=epochs, group=group)
        tasks += [run, angles_task(out, run, angles_file(out, d.name, seed, lr, epochs))]
    main = next(t for t in tasks if t.out.name == "full")
    tasks.append(angles_task(out, main, seed_dir(out, d.name, seed) / "angles.json"))
    return tasks


def angles_task(out: Path, run: Task, path: Path) -> Task:
    """``partialft angles`` between the bundled weights and a full run."""
    argv = ["angles", str(bundled_weights()), str(run.out), "--model", MODEL, "--num-classes",
            "10", "--out", str(path)]
    return Task(rel(out, path), "angles", "angles", argv, path, ANGLES_S, (run.name,))


def fapft_tasks(p: Protocol, d: Data, seed: int, out: Path) -> list[Task]:
    """FAPFT: the auto pipeline on the full run, and top-k 1..K in both modes (Fig. 6)."""
    base = seed_dir(out, d.name, seed)
    full, angles = rel(out, base / "full"), rel(out, base / "angles.json")
    argv = ["fapft", *RECIPE, *d.flags, "--epochs", str(p.epochs), "--lr", f"{p.lr:g}",
            "--seed", str(seed), "--mode", "auto", "--reference", str(base / "full"), *QUIET,
            "--out", str(base / AUTO)]
    auto = Task(rel(out, base / AUTO), "fapft", "fapft --mode auto (Table 1, Fig. 6)", argv,
                base / AUTO, PROBE_S + train_est(d, p.epochs, "fapft"), (full,))
    tasks = [auto]
    for mode, k in itertools.product(MODES, p.topks):
        extra = ("--angles", str(base / "angles.json"), "--topk", str(k), "--mode", mode)
        tasks.append(train_task(p, d, seed, out, f"fapft-{mode}-k{k}", "fapft", extra,
                                group="Fig. 6 fapft runs (top-k x mode)", deps=(angles,)))
    return tasks


def soup_tasks(p: Protocol, d: Data, seed: int, out: Path) -> list[Task]:
    """Uniform and greedy soups of each family (Table 3)."""
    tasks = []
    for fam, ingredients in soup_families(p, out, d.name, seed).items():
        for kind in ("uniform", "greedy"):
            path = seed_dir(out, d.name, seed) / f"soup-{fam}-{kind}"
            argv = ["soup", *map(str, ingredients), "--threads", "1", "--out", str(path)]
            argv += ["--greedy"] if kind == "greedy" else []
            tasks.append(Task(rel(out, path), "soup", "soups (Table 3)", argv, path,
                              soup_est(d, len(ingredients), kind == "greedy"),
                              tuple(rel(out, i) for i in ingredients)))
    return tasks


def eval_spec(p: Protocol, ds: str) -> dict[str, Any]:
    """The eval.json ``spec`` of the study's corruption evaluation."""
    return {"dataset": ds, "split": "test", "max_images": p.corrupt_images,
            "corruptions": p.corruptions, "severities": p.severities, "seed": 0}


def eval_tasks(p: Protocol, d: Data, seed: int, out: Path) -> list[Task]:
    """Corruption evaluations of the Table 1 runs and the uniform soups."""
    base = seed_dir(out, d.name, seed)
    runs = list(table1_dirs(p, out, d.name, seed).values())
    runs += [base / f"soup-{fam}-uniform" for fam in soup_families(p, out, d.name, seed)]
    tasks = []
    for run in runs:
        argv = ["eval", str(run), "--dataset", d.name, "--corruptions", p.corruptions,
                "--severities", p.severities, "--max-images", str(p.corrupt_images),
                "--seed", "0", "--batch-size", "128", "--threads", "1", "--no-progress"]
        producer = rel(out, base / AUTO) if run.parent.name == AUTO else rel(out, run)
        tasks.append(Task(rel(out, run) + "#eval", "eval", "corruption evals (Table 4)", argv,
                          run, eval_est(p, d), (producer,), spec=eval_spec(p, d.name)))
    return tasks


def build_grid(p: Protocol, out: Path) -> list[Task]:
    """Every task of the study except the reports, ordered so that long chains start first."""
    tasks: list[Task] = []
    for ds in p.datasets:
        d = dataset(p, ds, out)
        for seed in p.seeds:
            tasks += full_tasks(p, d, seed, out)
            others = [m for m in p.methods if m != "full"]
            tasks += [train_task(p, d, seed, out, m, m) for m in others]
            tasks += fapft_tasks(p, d, seed, out) + soup_tasks(p, d, seed, out)
            tasks += eval_tasks(p, d, seed, out)
    first = [t for t in tasks if t.out.name == "full" and t.kind == "train"]
    rest = sorted((t for t in tasks if t not in first), key=lambda t: -t.est)
    return first + [t for t in rest if t.kind == "angles"] + [t for t in rest
                                                             if t.kind != "angles"]


def report_tasks(p: Protocol, out: Path) -> list[Task]:
    """The ``partialft report`` calls: Table 1 + Table 4 + Figs. 1/3, Fig. 6, Table 3 (soups,
    grouped over seeds by their ingredients' recipes), Fig. 4."""
    runs: dict[str, list[Path]] = {"table1": [], "fig6": [], "table3": []}
    for ds, seed in itertools.product(p.datasets, p.seeds):
        base = seed_dir(out, ds, seed)
        t1 = list(table1_dirs(p, out, ds, seed).values())
        runs["table1"] += t1
        runs["table3"] += [base / f"soup-{fam}-{kind}" for fam in soup_families(p, out, ds, seed)
                           for kind in ("uniform", "greedy")]
        runs["fig6"] += [base / "full", t1[-1]] + [base / f"fapft-{m}-k{k}"
                                                   for m, k in itertools.product(MODES, p.topks)]
    runs.update(fig4_sets(p, out))
    return [report_task(out, name, inputs) for name, inputs in runs.items() if inputs]


def fig4_sets(p: Protocol, out: Path) -> dict[str, list[Path]]:
    """Report name -> the angles files of one Fig. 4 family (first seed for lr and epochs)."""
    s0, sets = p.seeds[0], {}
    for ds in p.datasets:
        sets[f"fig4-{ds}-seeds"] = [angles_file(out, ds, s, p.lr, p.epochs) for s in p.seeds]
        sets[f"fig4-{ds}-lr-s{s0}"] = [angles_file(out, ds, s0, lr, p.epochs)
                                       for lr in dict.fromkeys((p.lr, *p.soup_lrs))]
        sets[f"fig4-{ds}-epochs-s{s0}"] = [angles_file(out, ds, s0, p.lr, e)
                                           for e in sorted({p.epochs, *p.epoch_variants})]
    if len(p.datasets) > 1:
        sets[f"fig4-datasets-s{s0}"] = [angles_file(out, ds, s0, p.lr, p.epochs)
                                        for ds in p.datasets]
    return sets


def report_task(out: Path, name: str, inputs: list[Path]) -> Task:
    """One ``partialft report`` over the inputs that exist when it starts."""
    path = out / "report" / name
    deps = tuple(dict.fromkeys(producer(out, i) for i in inputs))
    return Task(rel(out, path), "report", "reports", [], path, REPORT_S, deps,
                inputs=tuple(inputs))


def producer(out: Path, path: Path) -> str:
    """The name of the task that writes ``path`` (a run dir or angles file)."""
    return rel(out, path.parent) if path.parent.name == AUTO else rel(out, path)


# --- done checks and command lines ---------------------------------------------------------


def is_done(task: Task) -> bool:
    """Whether the task's output is complete on disk (reports are always rewritten)."""
    if task.kind == "report":
        return False
    if task.kind == "angles":
        return task.out.is_file()
    if task.kind == "eval":
        return eval_done(task.out, task.spec or {})
    return (task.out / "summary.json").is_file()


def eval_done(run_dir: Path, spec: dict[str, Any]) -> bool:
    """Whether ``run_dir/eval.json`` holds an evaluation with exactly this spec."""
    path = run_dir / "eval.json"
    if not path.is_file():
        return False
    return any(isinstance(v, dict) and v.get("spec") == spec
               for v in json.loads(path.read_text()).values())


def present(paths: Sequence[Path]) -> list[str]:
    """The finished ones of these run dirs and angles files."""
    return [str(i) for i in paths if (i / "summary.json").is_file() or i.suffix == ".json"
            and i.is_file()]


def command(task: Task) -> list[str]:
    """The argv to run now: resume or replace an interrupted run; reports get their inputs."""
    if task.kind == "report":
        return ["report", *present(task.inputs), "--out", str(task.out), "--overwrite"]
    if task.kind in ("train", "soup") and task.out.exists():
        resumable = task.kind == "train" and (task.out / "state").is_dir()
        return [*task.argv, "--resume" if resumable else "--overwrite"]
    return task.argv


# --- workers -------------------------------------------------------------------------------


@contextlib.contextmanager
def redirected(fd: int) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``fd``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for s in saved:
            os.close(s)


def run_cli(argv: list[str], log: str) -> tuple[int, float]:
    """Run ``partialft ARGV`` in this worker, output to ``log``; (exit code, seconds)."""
    start = time.perf_counter()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as fh, redirected(fh.fileno()):
        print("$ partialft " + shlex.join(argv), flush=True)
        try:
            from partialft.cli import main

            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
    return code, time.perf_counter() - start


def make_pool(jobs: int) -> ProcessPoolExecutor:
    """Worker processes (spawned: no state shared with this one), recycled now and then."""
    extra: dict[str, Any] = {}
    if sys.version_info >= (3, 11):
        extra["max_tasks_per_child"] = TASKS_PER_WORKER
    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), **extra)


# --- scheduling and progress ---------------------------------------------------------------


class Eta:
    """Elapsed time, and the remaining time from measured/planned seconds per task kind."""

    def __init__(self, jobs: int, history: dict[str, dict[str, Any]]) -> None:
        """Start the clock; ``history`` is OUT/timings.json (name -> kind, est, seconds)."""
        self.jobs, self.history, self.start = jobs, history, time.monotonic()

    def ratio(self, kind: str) -> float:
        """Measured over planned seconds of the tasks of this kind that ran (1 before any)."""
        rows = [h for h in self.history.values() if h["kind"] == kind and h["est"] > 0]
        if not rows:
            return 1.0
        return sum(h["seconds"] for h in rows) / sum(h["est"] for h in rows)

    def remaining(self, pending: Sequence[Task], running: dict[str, tuple[Task, float]]) -> float:
        """Seconds left: pending tasks plus what the running ones still need, over the jobs."""
        now = time.monotonic()
        left = sum(t.est * self.ratio(t.kind) for t in pending)
        left += sum(max(t.est * self.ratio(t.kind) - (now - s), 0.0) for t, s in running.values())
        return left / self.jobs

    def elapsed(self) -> float:
        """Seconds since this invocation started."""
        return time.monotonic() - self.start


def log_path(out: Path, task: Task) -> Path:
    """Where a task's output goes."""
    return out / "logs" / (task.name.replace("#", "-") + ".log")


def hms(seconds: float) -> str:
    """1:02:03."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def load_json(path: Path, default: Any) -> Any:
    """A JSON file's content, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def save_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


class Scheduler:
    """Runs the tasks that are not done, at most ``jobs`` at a time, in dependency order."""

    def __init__(self, tasks: list[Task], out: Path, jobs: int) -> None:
        """Check which tasks are done already and read the measured times so far."""
        self.tasks, self.out, self.jobs = tasks, out, jobs
        self.by_name = {t.name: t for t in tasks}
        self.status = {t.name: "skipped" if is_done(t) else "todo" for t in tasks}
        self.history: dict[str, dict[str, Any]] = load_json(out / "timings.json", {})
        self.eta = Eta(jobs, self.history)
        self.running: dict[str, tuple[Task, float]] = {}

    def ready(self, task: Task) -> bool:
        """Dependencies finished (a report also runs when some of its inputs failed)."""
        states = [self.status.get(d, "skipped") for d in task.deps]
        if task.kind == "report":
            return all(s not in ("todo", "running") for s in states)
        return all(s in ("ok", "skipped") for s in states)

    def block(self) -> None:
        """Mark the tasks whose dependencies failed (or were blocked) as blocked."""
        changed = True
        while changed:
            changed = False
            for t in self.tasks:
                bad = any(self.status.get(d) in ("failed", "blocked") for d in t.deps)
                if self.status[t.name] == "todo" and t.kind != "report" and bad:
                    self.status[t.name], changed = "blocked", True

    def run(self) -> dict[str, str]:
        """Run everything; returns the final status of each task."""
        skipped = sum(s == "skipped" for s in self.status.values())
        todo = len(self.tasks) - skipped
        planned = sum(t.est for t in self.tasks if self.status[t.name] == "todo") / self.jobs
        print(f"{len(self.tasks)} tasks: {skipped} already done (skipped), {todo} to run, "
              f"planned {hms(planned)} on {self.jobs} worker(s)", flush=True)
        if todo:
            with make_pool(self.jobs) as pool:
                self.loop(pool)
        return self.status

    def loop(self, pool: ProcessPoolExecutor) -> None:
        """Submit ready tasks while workers are free; record each result as it comes."""
        futures: dict[Future, Task] = {}
        while True:
            self.block()
            for t in self.tasks:
                if len(futures) < self.jobs and self.status[t.name] == "todo" and self.ready(t):
                    if t.kind == "report" and not present(t.inputs):
                        self.status[t.name] = "blocked"  # nothing to report on
                        continue
                    self.status[t.name] = "running"
                    self.running[t.name] = (t, time.monotonic())
                    futures[pool.submit(run_cli, command(t), str(log_path(self.out, t)))] = t
            if not futures:
                return
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for f in finished:
                self.finish(futures.pop(f), f)

    def finish(self, task: Task, future: Future) -> None:
        """Record one finished task and print the progress line."""
        del self.running[task.name]
        try:
            code, seconds = future.result()
        except BrokenProcessPool:  # a worker died (killed, out of memory): stop; a rerun resumes
            print(f"a worker died while running {task.name}", flush=True)
            raise
        ok = code == 0 and (task.kind == "report" or is_done(task))
        self.status[task.name] = "ok" if ok else "failed"
        if ok:
            self.history[task.name] = {"kind": task.kind, "est": task.est, "seconds": seconds}
            save_json(self.out / "timings.json", self.history)
        self.print_progress(task, ok, code, seconds)

    def print_progress(self, task: Task, ok: bool, code: int, seconds: float) -> None:
        """One line: done/total, this task, elapsed, estimated remaining."""
        done = sum(s not in ("todo", "running") for s in self.status.values())
        pending = [t for t in self.tasks if self.status[t.name] == "todo"]
        left = self.eta.remaining(pending, self.running)
        log = log_path(self.out, task).relative_to(self.out)
        what = "ok" if ok else f"FAILED (exit {code}; see {log})"
        print(f"[{done:>4}/{len(self.tasks)}] {what:<4} {task.kind:<6} {task.name} "
              f"{seconds:6.1f} s | elapsed {hms(self.eta.elapsed())} | remaining ~{hms(left)}",
              flush=True)


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
