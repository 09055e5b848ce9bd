"""The study's grid: its protocol, datasets, cost model and tasks (see study.py)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
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
DIGITS_SIZE, DIGITS_TEST = 1797, 0.2
FASHION_TEST = 10_000
TASKS_PER_WORKER = 40
KIND_ORDER = ("train", "fapft", "angles", "soup", "eval", "report")  # --plan's line order

# --- the cost model (seconds on one core; measured, see study.py's docstring) --------------
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
                                       for lr in sorted({p.lr, *p.soup_lrs})]  # columns in lr order
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
