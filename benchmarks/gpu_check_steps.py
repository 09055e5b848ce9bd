"""The GPU check's steps: sizes, budgets, data and the command of each (see gpu_check.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_check_judge import (
    judge_bench,
    judge_pretrain,
    judge_tests,
    judge_torchrun,
    judge_train,
)

ROOT = Path(__file__).resolve().parents[1]
TOTAL_S = 480.0  # GPU mode: no check step starts after 8 minutes; the budgets add up to 475 s
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
        "sklearn": "scikit-learn", "filelock": "filelock", "psutil": "psutil"}
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


# GPU-mode budgets in seconds (sum 475 <= TOTAL_S - RESERVE_S: the check is <= 8 minutes of
# commands, the rest of the device call pretrains a backbone, gpu_check_backbone.py). Estimates
# for an H100/H200, never measured there: ~5 s to start Python and import torch in every step;
# the benches ~3-5 s per method to build the model on the CPU plus ~1-2 s of GPU steps (9 ViT-B
# rows ~50 s, 8 Swin-B rows ~45 s); train mostly torch.compile's compiles (train graph, eval
# graph, the last partial eval batch: ~60-100 s) plus ~10 s of epochs; pretrain ~4 s to draw
# 100 fractal categories plus ~15 s of steps; torchrun ~20 s
BUDGETS = {"preflight": 20, "gpu-tests": 40, "bench-vit": 110, "bench-swin": 85, "train": 140,
           "pretrain": 40, "torchrun": 40}


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
