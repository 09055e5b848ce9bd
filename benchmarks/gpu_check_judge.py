"""The GPU check's verdicts: what each finished step must show to pass (see gpu_check.py)."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: gpu_check_steps imports this module
    from gpu_check_steps import Ctx, Step


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
    numbers = {**counts, "files": [a for a in step.argv if a.startswith("tests/")],
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
    # json only: a device call brings back at most 8 files (gpu_check.md has the table)
    shutil.copyfile(folder / "bench.json", ctx.out / f"{stem}.json")
    rows = [{k: r.get(k) for k in ROW_KEYS} for r in result["rows"]]
    ratios = [r["overhead"] for r in rows if r["overhead"] is not None]
    numbers = {"device": result["device"], "memory": result["memory"]["kind"],
               "options": {k: result["options"][k] for k in ("model", "batch_size", "amp",
                                                            "img_size", "steps", "warmup")},
               "rows": rows, "max_overhead": max(ratios, default=None),
               "loader_images_per_s": (result.get("loader") or {}).get("images_per_s"),
               "tables": [f"{stem}.json"]}
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
    """The loss falls epoch over epoch; bf16 on CUDA, compiled, fused AdamW in GPU mode."""
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
               "optimizer": summary.get("optimizer"), "wall_s": summary["wall_s"]}
    numbers["summary"] = (f"{cfg['dataset']}: loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
                          f"{numbers['images_per_s_last_epoch'] or summary['images_per_s']} "
                          "img/s")
    problems = [p for p in [loss_falls(losses)] if p]
    problems += on_cuda(ctx, summary["device"], "training")
    if check_recipe and summary["precision"] != "bf16":
        problems.append(f"precision {summary['precision']}, not bf16")
    if check_recipe and not cfg["compile"]:
        problems.append("the run was not compiled")
    if check_recipe and not (summary.get("optimizer") or {}).get("fused"):
        problems.append(f"the optimizer was not fused: {summary.get('optimizer')}")
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
