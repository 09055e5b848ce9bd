"""Everything in partialft that needs a GPU, in one command that fits a 9-minute device call.

    PYTHONPATH=src python benchmarks/gpu_check.py [--out DIR] [--cpu-smoke] [--only STEPS]

(`benchmarks/gpu_check.sh` is this with PYTHONPATH set; its header says how to run it on the
device machine and how Fashion-MNIST gets there.) Steps, each a subprocess with its own time
budget, run in this order and are all attempted even when one fails:

    preflight   python, torch, CUDA device, bf16, missing packages (always runs)
    gpu-tests   pytest -m gpu on the test files that hold GPU-marked tests
    bench-vit   partialft bench, vit_base_patch16_224, batch 128, bf16, all nine methods
    bench-swin  partialft bench, swin_base_patch4_window7_224, batch 128, bf16 (no vpt-deep:
                it is ViT-only)
    train       partialft train, bundled partialft_vit_tiny on Fashion-MNIST (stand-in:
                digits), bf16, --compile, fused AdamW, data resident on the device
    pretrain    partialft pretrain, 100 steps on fractals rendered on the device
    torchrun    python -m torch.distributed.run (torchrun) --nproc_per_node 1 -m partialft train

Writes gpu_check.json, gpu_check.md and gpu_check.log (the tail of every step's output) and the
two bench tables (bench_vit.*, bench_swin.*) into --out (default $OUT, else runs/gpu_check),
rewriting the json after each step; exit code 0 when every step passed, 1 otherwise.

Budget (GPU mode): the step budgets (BUDGETS) add up to 520 s and the whole check stops starting
steps at 530 s (TOTAL_S), so it ends inside 9 minutes; a step past its budget is killed and
fails. ``--cpu-smoke`` runs the same steps with tiny sizes on the CPU (test_vit, digits, a few
steps) in about a minute; ``tests/test_gpu_check.py`` runs it.

Forcing a failure (to check the failure path): ``--fail STEP[,STEP]`` or the environment
variable ``GPU_CHECK_FAIL=STEP[,STEP]`` replaces those steps' commands by one that exits 1.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOTAL_S = 530.0  # GPU mode: no step starts after this; the step budgets add up to 520 s
SMOKE_TOTAL_S = 900.0  # --cpu-smoke on a shared 2-core CPU
SMOKE_STEP_S = 150.0
RESERVE_S = 5.0  # kept back at the end to write the outputs
MIN_STEP_S = 10.0  # a step that would get less than this is not started
FAIL_ENV = "GPU_CHECK_FAIL"
FM_FILE = "train-images-idx3-ubyte"
DATA_DIR = ROOT / ".data"  # the folder a device call carries (see gpu_check.sh)

# import name -> distribution: what every partialft command imports (pyproject dependencies;
# tests/test_gpu_check.py keeps the two lists equal)
CORE = {"torch": "torch", "torchvision": "torchvision", "timm": "timm",
        "accelerate": "accelerate", "safetensors": "safetensors", "scipy": "scipy",
        "numpy": "numpy", "PIL": "pillow", "yaml": "pyyaml", "tqdm": "tqdm",
        "sklearn": "scikit-learn"}
EXTRA = {"pytest": "pytest", "matplotlib": "matplotlib", "peft": "peft"}
VIT_METHODS = "full,linear,attn,ffn,fapft,adapter,vpt-deep,ssf,lora"
SWIN_METHODS = "full,linear,attn,ffn,fapft,adapter,ssf,lora"  # vpt-deep is ViT-only

PREFLIGHT = """
import json, sys
out = {"python": sys.version.split()[0]}
try:
    import torch
    out.update(torch=torch.__version__, cuda_build=torch.version.cuda,
               cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(device=p.name, devices=torch.cuda.device_count(),
                   memory_gib=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported())
except Exception as exc:
    out["torch_error"] = repr(exc)
print("PREFLIGHT " + json.dumps(out))
"""


@dataclass
class Data:
    """The training data: Fashion-MNIST where its files are, else the digits stand-in."""

    dataset: str
    data_dir: str | None
    note: str


@dataclass
class Ctx:
    """What the steps share: mode, folders, data, and what preflight found."""

    smoke: bool
    out: Path
    work: Path
    data: Data
    forced: set[str]
    facts: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


@dataclass
class Step:
    """One check: a command, its time budget, the packages it needs, and how to judge it."""

    name: str
    title: str
    argv: list[str]
    budget_s: float
    needs: tuple[str, ...] = ()
    judge: Callable[[Ctx, Step], tuple[dict[str, Any], list[str]]] | None = None
    cwd: Path | None = None


@dataclass
class Result:
    """One entry of gpu_check.json."""

    name: str
    title: str
    command: str
    exit_code: int | None
    seconds: float
    budget_s: float
    status: str  # pass / fail
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    log_tail: str = ""


# --- data ------------------------------------------------------------------------------------

def find_fashion_mnist(base: Path) -> Path | None:
    """The folder under ``base`` that holds the Fashion-MNIST idx files, as partialft looks."""
    for d in (base, base / "fashion-mnist", base / "FashionMNIST" / "raw"):
        if (d / FM_FILE).is_file() or (d / f"{FM_FILE}.gz").is_file():
            return d
    return None


def choose_data(data_dir: str | None, smoke: bool) -> Data:
    """Fashion-MNIST from ``data_dir`` (default $PARTIALFT_DATA_DIR, else .data), else digits."""
    base = Path(data_dir or os.environ.get("PARTIALFT_DATA_DIR") or DATA_DIR).resolve()
    if smoke:
        return Data("digits", None, "--cpu-smoke trains on digits (scikit-learn, no files)")
    found = find_fashion_mnist(base)
    if found is not None:
        return Data("fashion-mnist", str(found), f"Fashion-MNIST from {found}")
    return Data("digits", None, f"stand-in: no Fashion-MNIST idx files in {base} (or its "
                "fashion-mnist/ or FashionMNIST/raw/), so train and torchrun use digits "
                "(1,797 8x8 images); carry .data to use Fashion-MNIST (gpu_check.sh header)")


# --- the steps -------------------------------------------------------------------------------

def partialft(*args: str) -> list[str]:
    """argv of ``python -m partialft ARGS`` in this interpreter."""
    return [sys.executable, "-m", "partialft", *args]


def gpu_test_files() -> list[str]:
    """Test files (relative to the repo) that hold tests marked ``gpu``."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "pytest.mark.gpu" in p.read_text(encoding="utf-8"))


def bench_step(ctx: Ctx, name: str, model: str, methods: str, budget: float) -> Step:
    """``partialft bench`` of one model: the real size, or a tiny one with --cpu-smoke."""
    size = (["--img-size", "32", "--batch-size", "8" if "vit" in model else "4",
             "--num-classes", "10", "--steps", "2", "--warmup", "1", "--threads", "1"]
            if ctx.smoke else ["--batch-size", "128", "--amp", "bf16", "--num-classes", "1000"])
    argv = partialft("bench", "--model", model, "--methods", methods, *size,
                     "--out", str(ctx.work / name))
    title = f"partialft bench {model}"
    return Step(name, title, argv, budget, ("matplotlib", "peft"), judge_bench)


def data_args(ctx: Ctx) -> list[str]:
    """The --dataset (and --data-dir) flags of the two training steps."""
    extra = ["--data-dir", ctx.data.data_dir] if ctx.data.data_dir else []
    return ["--dataset", ctx.data.dataset, *extra]


def train_args(ctx: Ctx) -> list[str]:
    """Dataset and size flags of the train step."""
    common = ["--model", "partialft_vit_tiny", "--img-size", "32", "--log-with", "none",
              "--no-progress", *data_args(ctx)]
    if ctx.smoke:  # no --compile: on a CPU it needs a C++ toolchain and minutes
        return [*common, "--max-per-split", "256", "--epochs", "2", "--batch-size", "32",
                "--warmup-epochs", "0.5", "--amp", "no", "--threads", "1"]
    batch = "256" if ctx.data.dataset == "fashion-mnist" else "64"
    return [*common, "--epochs", "3", "--batch-size", batch, "--warmup-epochs", "1",
            "--amp", "bf16", "--compile"]


def pretrain_args(ctx: Ctx) -> list[str]:
    """Size flags of the pretrain step."""
    if ctx.smoke:
        return ["--categories", "2", "--steps", "16", "--batch-size", "16", "--warmup-steps",
                "1", "--eval-every", "16", "--log-every", "8", "--checkpoint-every", "16",
                "--val-per-category", "2", "--chains", "32", "--iters", "40", "--threads", "1"]
    return ["--steps", "100", "--batch-size", "128", "--warmup-steps", "10", "--eval-every",
            "50", "--log-every", "20", "--checkpoint-every", "50", "--val-per-category", "5",
            "--amp", "bf16"]


def torchrun_args(ctx: Ctx) -> list[str]:
    """Flags of the one-process torchrun training."""
    size = (["--max-per-split", "128", "--batch-size", "32", "--amp", "no", "--threads", "1"]
            if ctx.smoke else ["--max-per-split", "4096", "--batch-size", "128", "--amp", "bf16"])
    return ["--model", "partialft_vit_tiny", "--img-size", "32", "--epochs", "1", "--log-with",
            "none", "--no-progress", *data_args(ctx), *size]


# GPU-mode budgets in seconds (sum 520 <= TOTAL_S). Estimates for an H100, never measured
# there: ~5 s to start Python and import torch in every step; the benches ~3-5 s per method to
# build the model on the CPU plus ~1-2 s of GPU steps (9 ViT-B rows ~50 s, 8 Swin-B rows
# ~45 s); train mostly torch.compile's compiles (train graph, eval graph, the last partial eval
# batch: ~60-100 s) plus ~10 s of epochs; pretrain ~4 s to draw 100 fractal categories plus
# ~15 s of steps; torchrun ~20 s
BUDGETS = {"preflight": 20, "gpu-tests": 40, "bench-vit": 120, "bench-swin": 90, "train": 160,
           "pretrain": 45, "torchrun": 45}


def plan(ctx: Ctx) -> list[Step]:
    """Every step after preflight, in order, with its command and budget."""
    b = {k: (SMOKE_STEP_S if ctx.smoke else float(v)) for k, v in BUDGETS.items()}
    w = ctx.work
    swin = "swin_tiny_patch4_window7_224" if ctx.smoke else "swin_base_patch4_window7_224"
    return [
        Step("gpu-tests", "pytest -m gpu",
             [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
              *gpu_test_files()], b["gpu-tests"], ("pytest",), judge_tests, ROOT),
        bench_step(ctx, "bench-vit", "test_vit" if ctx.smoke else "vit_base_patch16_224",
                   "full,fapft" if ctx.smoke else VIT_METHODS, b["bench-vit"]),
        bench_step(ctx, "bench-swin", swin, "full" if ctx.smoke else SWIN_METHODS,
                   b["bench-swin"]),
        Step("train", f"partialft train on {ctx.data.dataset}",
             partialft("train", *train_args(ctx), "--out", str(w / "train")), b["train"],
             judge=judge_train),
        Step("pretrain", "partialft pretrain",
             partialft("pretrain", *pretrain_args(ctx), "--no-progress", "--out",
                       str(w / "pretrain")), b["pretrain"], judge=judge_pretrain),
        Step("torchrun", "torchrun --nproc_per_node 1 -m partialft train",
             [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
              "1", "-m", "partialft", "train", *torchrun_args(ctx), "--out",
              str(w / "torchrun")], b["torchrun"], judge=judge_torchrun),
    ]


# --- judging a finished step -----------------------------------------------------------------

def read_json(path: Path) -> Any:
    """A JSON file's content."""
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file's records."""
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def loss_falls(losses: Sequence[float]) -> str | None:
    """None when the losses are finite and the last is below the first, else the problem."""
    if len(losses) < 2:
        return f"need at least two loss readings to see it fall, got {len(losses)}"
    if not all(math.isfinite(v) for v in losses):
        return f"non-finite loss in {list(losses)}"
    if not losses[-1] < losses[0]:
        return f"loss did not fall: first {losses[0]:.4f}, last {losses[-1]:.4f}"
    return None


def on_cuda(ctx: Ctx, device: str, what: str) -> list[str]:
    """A problem when a GPU-mode step did not run on CUDA."""
    return [] if ctx.smoke or "cuda" in str(device) else [f"{what} ran on {device}, not CUDA"]


def judge_tests(ctx: Ctx, step: Step) -> tuple[dict[str, Any], list[str]]:
    """Counts from pytest's summary line; on a GPU every selected test must run and pass."""
    text = (ctx.work / "logs" / f"{step.name}.log").read_text(encoding="utf-8", errors="replace")
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors", "deselected")}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", text):
        counts["errors" if word.startswith("error") else word] = int(n)
    numbers = {**counts, "files": gpu_test_files(),
               "summary": ", ".join(f"{v} {k}" for k, v in counts.items() if v)}
    problems = []
    if not ctx.smoke and counts["skipped"]:
        problems.append(f"{counts['skipped']} GPU test(s) skipped: CUDA not visible to pytest")
    if not ctx.smoke and not counts["passed"]:
        problems.append("no GPU test passed")
    return numbers, problems


ROW_KEYS = ("label", "trainable_params", "train_ms", "train_images_per_s", "train_peak_mb",
            "saved_activations_mb", "infer_ms", "infer_peak_mb", "plain_ms", "overhead",
            "optimizer")


def judge_bench(ctx: Ctx, step: Step) -> tuple[dict[str, Any], list[str]]:
    """Every method measured, on CUDA with fused AdamW in GPU mode; copies bench.json/md out."""
    folder = ctx.work / step.name
    result = read_json(folder / "bench.json")
    stem = step.name.replace("-", "_")
    for ext in ("json", "md"):
        shutil.copyfile(folder / f"bench.{ext}", ctx.out / f"{stem}.{ext}")
    rows = [{k: r.get(k) for k in ROW_KEYS} for r in result["rows"]]
    ratios = [r["overhead"] for r in rows if r["overhead"] is not None]
    numbers = {"device": result["device"], "memory": result["memory"]["kind"],
               "options": {k: result["options"][k] for k in ("model", "batch_size", "amp",
                                                            "img_size", "steps", "warmup")},
               "rows": rows, "max_overhead": max(ratios, default=None),
               "loader_images_per_s": (result.get("loader") or {}).get("images_per_s"),
               "tables": [f"{stem}.md", f"{stem}.json"]}
    numbers["summary"] = f"rows: {len(rows)}" + (
        f", partialft/plain {min(ratios):.3f}-{max(ratios):.3f}x" if ratios else "")
    wanted = result["options"]["methods"]
    problems = [f"no row for {m}" for m in wanted if m not in {r["label"] for r in rows}]
    problems += [f"{r['label']}: train_ms {r['train_ms']}" for r in rows
                 if not (r["train_ms"] or 0) > 0]
    problems += on_cuda(ctx, result["device"], "the bench")
    if not ctx.smoke:
        problems += [f"{r['label']}: optimizer {r['optimizer']}, not fused" for r in rows
                     if "fused" not in str(r["optimizer"])]
    return numbers, problems


def epoch_images_per_s(metrics: list[dict[str, Any]], batch: int) -> float | None:
    """Training images/s of the last epoch alone (metrics hold the running average)."""
    if len(metrics) < 2:
        return None
    (s0, r0), (s1, r1) = ((m["step"], m["images_per_s"]) for m in metrics[-2:])
    seconds = s1 * batch / r1 - s0 * batch / r0
    return round((s1 - s0) * batch / seconds, 1) if seconds > 0 else None


def judge_train(ctx: Ctx, step: Step) -> tuple[dict[str, Any], list[str]]:
    """The loss falls epoch over epoch; bf16 on CUDA with --compile in GPU mode."""
    return judge_run(ctx, ctx.work / "train", check_recipe=not ctx.smoke)


def judge_run(ctx: Ctx, run: Path, check_recipe: bool) -> tuple[dict[str, Any], list[str]]:
    """Numbers and problems of a ``partialft train`` run dir."""
    summary, metrics = read_json(run / "summary.json"), read_jsonl(run / "metrics.jsonl")
    cfg = summary["config"]
    losses = [m["train_loss"] for m in metrics]
    numbers = {"dataset": cfg["dataset"], "data": ctx.data.note, "device": summary["device"],
               "precision": summary["precision"], "compile": cfg["compile"],
               "processes": summary["processes"], "epochs": len(metrics),
               "batch_size": cfg["batch_size"], "train_loss": [round(v, 4) for v in losses],
               "val_acc": summary["final_acc"], "test_acc": summary["test_acc"],
               "images_per_s_whole_run": summary["images_per_s"],
               "images_per_s_last_epoch": epoch_images_per_s(metrics, cfg["batch_size"]),
               "wall_s": summary["wall_s"]}
    numbers["summary"] = (f"{cfg['dataset']}: loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
                          f"{numbers['images_per_s_last_epoch'] or summary['images_per_s']} "
                          "img/s")
    problems = [p for p in [loss_falls(losses)] if p]
    problems += on_cuda(ctx, summary["device"], "training")
    if check_recipe and summary["precision"] != "bf16":
        problems.append(f"precision {summary['precision']}, not bf16")
    if check_recipe and not cfg["compile"]:
        problems.append("the run was not compiled")
    return numbers, problems


def judge_pretrain(ctx: Ctx, step: Step) -> tuple[dict[str, Any], list[str]]:
    """The loss falls from the first log interval to the last; on CUDA in GPU mode."""
    run = ctx.work / "pretrain"
    summary, metrics = read_json(run / "summary.json"), read_jsonl(run / "metrics.jsonl")
    losses = [m["loss"] for m in metrics]
    numbers = {"device": summary["device"], "precision": summary["precision"],
               "steps": summary["steps"], "categories": summary["categories"],
               "loss": losses, "val_acc": summary["val_acc"], "wall_s": summary["wall_s"],
               "images_per_s_last_interval": metrics[-1]["images_per_s"] if metrics else None}
    numbers["summary"] = (f"{summary['steps']} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
                          f"{numbers['images_per_s_last_interval']} img/s")
    problems = [p for p in [loss_falls(losses)] if p]
    return numbers, problems + on_cuda(ctx, summary["device"], "pretraining")


def judge_torchrun(ctx: Ctx, step: Step) -> tuple[dict[str, Any], list[str]]:
    """The run finished as one process of a torchrun launch (on CUDA in GPU mode)."""
    summary = read_json(ctx.work / "torchrun" / "summary.json")
    numbers = {k: summary[k] for k in ("device", "processes", "precision", "test_acc",
                                       "images_per_s", "wall_s")}
    numbers["summary"] = f"{summary['processes']} process on {summary['device']}"
    problems = [] if summary["processes"] == 1 else [f"processes {summary['processes']}, not 1"]
    return numbers, problems + on_cuda(ctx, summary["device"], "the torchrun run")


# --- running ---------------------------------------------------------------------------------

def step_env(smoke: bool) -> dict[str, str]:
    """The environment of every step: src first on PYTHONPATH; no GPU with --cpu-smoke."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH"))
                                        if p)
    env["PYTHONUNBUFFERED"] = "1"
    if smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_command(argv: list[str], log: Path, timeout: float, cwd: Path,
                env: dict[str, str] | None = None) -> tuple[int | None, float]:
    """Run ``argv`` with output to ``log``; kill its process group after ``timeout`` seconds.

    Returns (exit code or None when killed, seconds)."""
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return code, round(time.perf_counter() - start, 2)


def tail(path: Path, chars: int = 2500) -> str:
    """The last ``chars`` characters of a log file."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    return text[-chars:]


def display(argv: Sequence[str]) -> str:
    """A command as a shell line, with this interpreter shown as ``python``."""
    return shlex.join(["python" if a == sys.executable else a for a in argv])


def blocked(ctx: Ctx, step: Step) -> str | None:
    """Why ``step`` cannot run here (missing packages, no CUDA), or None."""
    missing = [f"{m} ({ctx.missing[m]})" for m in (*CORE, *step.needs) if m in ctx.missing]
    if missing:
        return (f"not run: missing Python package(s) {', '.join(missing)}; carry them as wheels "
                "(docs/RESULTS.md, GPU section)")
    if not ctx.smoke and not ctx.facts.get("cuda_available"):
        return "not run: no CUDA device (see preflight); on a CPU use --cpu-smoke"
    return None


def execute(ctx: Ctx, step: Step, timeout: float) -> Result:
    """Run one step (or its forced failure) and judge it."""
    forced = step.name in ctx.forced
    argv = ([sys.executable, "-c", f"raise SystemExit('forced failure: {FAIL_ENV} or --fail "
             f"names {step.name}')"] if forced else step.argv)
    log = ctx.work / "logs" / f"{step.name}.log"
    code, seconds = run_command(argv, log, timeout, step.cwd or ctx.work, step_env(ctx.smoke))
    res = Result(step.name, step.title, display(step.argv), code, seconds, step.budget_s,
                 "fail", "")
    if code is None:
        res.reason = f"timed out: killed after {timeout:.0f} s (budget {step.budget_s:.0f} s)"
    elif code != 0:
        res.reason = f"exit code {code}" + (" (forced failure)" if forced else "")
    else:
        res.status, res.reason, res.numbers = judged(ctx, step)
    if res.status == "fail":
        res.log_tail = tail(log)
    return res


def judged(ctx: Ctx, step: Step) -> tuple[str, str, dict[str, Any]]:
    """(status, reason, numbers) from the step's judge; a judge that breaks fails the step."""
    if step.judge is None:
        return "pass", "exit code 0", {}
    try:
        numbers, problems = step.judge(ctx, step)
    except Exception as exc:  # any unreadable output is a failed step
        return "fail", f"could not read its results: {type(exc).__name__}: {exc}", {}
    return ("fail" if problems else "pass"), ("; ".join(problems) or "ok"), numbers


def missing_packages() -> dict[str, str]:
    """Import name -> distribution of the packages partialft or a step needs that are absent."""
    return {m: d for m, d in {**CORE, **EXTRA}.items() if importlib.util.find_spec(m) is None}


def versions() -> dict[str, str]:
    """Installed versions of the distributions the check uses."""
    out = {}
    for dist in (*CORE.values(), *EXTRA.values()):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def preflight(ctx: Ctx) -> Result:
    """Interpreter, torch and CUDA facts (in a subprocess) and the packages that are missing."""
    ctx.missing = missing_packages()
    log = ctx.work / "logs" / "preflight.log"
    argv = [sys.executable, "-c", PREFLIGHT]
    code, seconds = run_command(argv, log, BUDGETS["preflight"], ctx.work, step_env(ctx.smoke))
    line = next((ln for ln in tail(log, 100_000).splitlines() if ln.startswith("PREFLIGHT ")), "")
    ctx.facts = json.loads(line.removeprefix("PREFLIGHT ")) if line else {}
    problems = [f"missing: {', '.join(f'{m} ({d})' for m, d in ctx.missing.items())}"] \
        if ctx.missing else []
    if not line:
        problems.append(f"the torch probe printed nothing (exit code {code})")
    if not ctx.smoke and not ctx.facts.get("cuda_available"):
        problems.append("torch sees no CUDA device")
    if not ctx.smoke and ctx.facts.get("cuda_available") and not ctx.facts.get("bf16"):
        problems.append("the GPU has no bf16")
    numbers = {**ctx.facts, "versions": versions(), "data": ctx.data.note,
               "summary": f"torch {ctx.facts.get('torch')}, "
               f"{ctx.facts.get('device') or 'no CUDA device'}"}
    return Result("preflight", "python, torch, CUDA, packages", "python -c <torch probe>", code,
                  seconds, BUDGETS["preflight"], "fail" if problems else "pass",
                  "; ".join(problems) or "ok", numbers, tail(log) if problems else "")


def skipped(step: Step, reason: str) -> Result:
    """A step that was not started, recorded as failed with the reason."""
    return Result(step.name, step.title, display(step.argv), None, 0.0, step.budget_s, "fail",
                  reason)


# --- outputs ---------------------------------------------------------------------------------

def report(ctx: Ctx, results: list[Result], started: str, seconds: float) -> dict[str, Any]:
    """What gpu_check.json holds."""
    return {"mode": "cpu-smoke" if ctx.smoke else "gpu",
            "passed": all(r.status == "pass" for r in results), "started": started,
            "seconds": round(seconds, 1), "total_budget_s": SMOKE_TOTAL_S if ctx.smoke
            else TOTAL_S, "host": platform.node(), "python": sys.executable,
            "env": "PYTHONPATH=src" + (" CUDA_VISIBLE_DEVICES=" if ctx.smoke else ""),
            "device": ctx.facts.get("device"), "data": asdict(ctx.data),
            "steps": [asdict(r) for r in results]}


def markdown(rep: dict[str, Any]) -> str:
    """gpu_check.md: a table with one row per step, then each step's command and numbers."""
    verdict = "PASSED" if rep["passed"] else "FAILED"
    lines = [f"# partialft GPU check ({rep['mode']}): {verdict}", "",
             f"{rep['started']}, host {rep['host']}, device {rep['device'] or 'none'}, "
             f"{rep['seconds']} s of a {rep['total_budget_s']:.0f} s budget; data: "
             f"{rep['data']['note']}.", "",
             "| step | result | seconds (budget) | exit | measured | why |",
             "|---|---|---:|---:|---|---|"]
    for s in rep["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} ({s['budget_s']:.0f})"
                     f" | {s['exit_code']} | {s['numbers'].get('summary', '')} | "
                     f"{s['reason'].replace('|', '/')} |")
    for s in rep["steps"]:
        lines += ["", f"## {s['name']}: {s['title']}", "", "```", s["command"], "```"]
        lines += bench_table(s["numbers"]) if "rows" in s["numbers"] else [
            f"- {k}: {v}" for k, v in s["numbers"].items() if k != "summary"]
        if s["log_tail"]:
            lines += ["", "Output (tail):", "", "```", s["log_tail"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def bench_table(numbers: dict[str, Any]) -> list[str]:
    """The bench rows as a short Markdown table."""
    lines = [f"- device {numbers['device']}, memory {numbers['memory']}, options "
             f"{numbers['options']}; full tables: {', '.join(numbers['tables'])}", "",
             "| method | train ms/step | img/s | train peak MiB | test ms | partialft / plain |"
             " optimizer |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in numbers["rows"]:
        lines.append(f"| {r['label']} | {r['train_ms']} | {r['train_images_per_s']} | "
                     f"{r['train_peak_mb']} | {r['infer_ms']} | {r['overhead']} | "
                     f"{r['optimizer']} |")
    return lines


def write(ctx: Ctx, rep: dict[str, Any]) -> None:
    """Write gpu_check.json, gpu_check.md and gpu_check.log into the output folder."""
    (ctx.out / "gpu_check.json").write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    (ctx.out / "gpu_check.md").write_text(markdown(rep), encoding="utf-8")
    logs = sorted((ctx.work / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime)
    (ctx.out / "gpu_check.log").write_text(
        "".join(f"===== {p.stem} =====\n{tail(p, 20_000)}\n" for p in logs), encoding="utf-8")


# --- main ------------------------------------------------------------------------------------

def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_check",
                   help="folder for gpu_check.json/md/log and the bench tables (default: $OUT, "
                   "else runs/gpu_check)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny sizes on the CPU (test_vit, digits, a few steps): about a minute")
    p.add_argument("--data-dir", default=None, help="where Fashion-MNIST's idx files are "
                   "(default: $PARTIALFT_DATA_DIR, else .data in the repo); without them the "
                   "train steps use digits")
    p.add_argument("--only", default=None, help="comma-separated steps to run (preflight "
                   "always runs)")
    p.add_argument("--fail", default=os.environ.get(FAIL_ENV, ""),
                   help=f"comma-separated steps to force to fail (default: ${FAIL_ENV})")
    p.add_argument("--work", default=None, help="folder for the steps' run dirs and logs "
                   "(default: a temporary folder, removed afterwards)")
    p.add_argument("--dry-run", action="store_true", help="print the steps, their budgets and "
                   "commands, and run nothing")
    return p.parse_args(argv)


def names(text: str | None) -> set[str]:
    """The step names in a comma-separated list; unknown ones are an error (exit 2)."""
    chosen = {n.strip() for n in (text or "").split(",") if n.strip()}
    bad = sorted(chosen - set(BUDGETS))
    if bad:
        sys.stderr.write(f"gpu_check: unknown step(s) {', '.join(bad)}; steps are "
                         f"{', '.join(BUDGETS)}.\n")
        raise SystemExit(2)
    return chosen


def run_all(ctx: Ctx, steps: list[Step], started: str) -> dict[str, Any]:
    """Preflight, then every step inside the total budget; writes the outputs after each."""
    t0, total = time.perf_counter(), SMOKE_TOTAL_S if ctx.smoke else TOTAL_S
    results = [preflight(ctx)]
    if "preflight" in ctx.forced:
        results[0].status, results[0].reason = "fail", "forced failure"
    write(ctx, report(ctx, results, started, time.perf_counter() - t0))
    for step in steps:
        left = total - (time.perf_counter() - t0) - RESERVE_S
        why = blocked(ctx, step) if step.name not in ctx.forced else None
        if why is None and left < MIN_STEP_S:
            why = f"not run: only {max(left, 0):.0f} s left of the {total:.0f} s budget"
        results.append(skipped(step, why) if why else execute(ctx, step, min(step.budget_s,
                                                                              left)))
        r = results[-1]
        print(f"[gpu_check] {r.name}: {r.status} ({r.seconds:.1f} s) {r.reason}",
              file=sys.stderr, flush=True)
        write(ctx, report(ctx, results, started, time.perf_counter() - t0))
    return report(ctx, results, started, time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; 0 when every step passed, 1 when any failed."""
    args = parse(argv)
    out, forced, only = Path(args.out).resolve(), names(args.fail), names(args.only)
    work = Path(args.work or ("WORK" if args.dry_run else tempfile.mkdtemp(prefix="gpu_check-")))
    ctx = Ctx(args.cpu_smoke, out, work if args.dry_run else work.resolve(),
              choose_data(args.data_dir, args.cpu_smoke), forced)
    steps = [s for s in plan(ctx) if not only or s.name in only]
    if args.dry_run:
        for s in steps:
            print(f"{s.name:<11} {s.budget_s:5.0f} s  {display(s.argv)}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        rep = run_all(ctx, steps, started)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print((out / "gpu_check.md").read_text(encoding="utf-8"), end="")
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
