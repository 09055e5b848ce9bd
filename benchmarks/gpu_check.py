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

Code: this file (running the steps, preflight, the outputs, main), ``gpu_check_steps.py``
(sizes, budgets, data and each step's command), ``gpu_check_judge.py`` (what a finished
step must show to pass).

Forcing a failure (to check the failure path): ``--fail STEP[,STEP]`` or the environment
variable ``GPU_CHECK_FAIL=STEP[,STEP]`` replaces those steps' commands by one that exits 1.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpu_check_steps import (
    BUDGETS,
    CORE,
    EXTRA,
    FAIL_ENV,
    MIN_STEP_S,
    PREFLIGHT,
    RESERVE_S,
    ROOT,
    SMOKE_TOTAL_S,
    TOTAL_S,
    Ctx,
    Result,
    Step,
    choose_data,
    plan,
)

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
