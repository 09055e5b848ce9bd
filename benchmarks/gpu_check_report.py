"""The GPU check's outputs: gpu_check.json, gpu_check.md and gpu_check.log (see gpu_check.py)."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpu_check_steps import SMOKE_TOTAL_S, TOTAL_S, Ctx, Result


def tail(path: Path, chars: int = 2500) -> str:
    """The last ``chars`` characters of a log file."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    return text[-chars:]


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


