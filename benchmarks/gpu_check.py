"""Everything in partialft that needs a GPU in 8 minutes, then a backbone pretrained until 570 s.

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
    backbone    partialft pretrain on 1,000 fractal categories with the time left until the
                deadline (gpu_check_backbone.py), killed there if still running; its weights
                are exported either way

Writes gpu_check.json, gpu_check.md and gpu_check.log (the tail of every step's output), the
two bench tables (bench_vit.json, bench_swin.json) and the backbone (backbone.safetensors,
backbone.md, backbone_metrics.jsonl) into --out (default $OUT, else runs/gpu_check): 8 files,
what a device call brings back at most. The json is rewritten after each step; exit code 0 when
every step passed, 1 otherwise.

Budget (GPU mode): the step budgets (BUDGETS) add up to 475 s and no check step starts after
480 s (TOTAL_S), so the check is at most 8 minutes of commands; a step past its budget is killed
and fails. The backbone then runs until DEADLINE_S (570 s, ``--deadline``) minus 30 s kept for
its export, so the command ends inside the device call's 600 s and, with the machine's start,
inside a 15-minute device budget. ``--cpu-smoke`` runs the same steps with tiny sizes on the CPU
(test_vit, digits, a few steps; a backbone of at most 32 steps on 2 categories) in a few minutes;
``tests/test_gpu_check.py`` runs it.

Code: this file (running the steps, preflight, the outputs, main), ``gpu_check_steps.py``
(sizes, budgets, data and each step's command), ``gpu_check_judge.py`` (what a finished
step must show to pass), ``gpu_check_backbone.py`` (the backbone's size, export and judge).

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
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpu_check_backbone import DEADLINE_S, EXPORT_S, MARK, MIN_BACKBONE_S, judge, plan_size
from gpu_check_report import report, tail, write
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
    partialft,
    plan,
)

SMOKE_DEADLINE_S = 1200.0  # --cpu-smoke: the backbone phase ends by then
SMOKE_MIN_BACKBONE_S = 15.0

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
    p.add_argument("--deadline", type=float, default=None, help="seconds after the start by "
                   f"which the backbone pretraining is stopped and exported (default "
                   f"{DEADLINE_S:.0f}, inside a 600 s device call; --cpu-smoke "
                   f"{SMOKE_DEADLINE_S:.0f})")
    return p.parse_args(argv)


def names(text: str | None) -> set[str]:
    """The step names in a comma-separated list; unknown ones are an error (exit 2)."""
    chosen = {n.strip() for n in (text or "").split(",") if n.strip()}
    bad = sorted(chosen - {*BUDGETS, "backbone"})
    if bad:
        sys.stderr.write(f"gpu_check: unknown step(s) {', '.join(bad)}; steps are "
                         f"{', '.join(BUDGETS)}, backbone.\n")
        raise SystemExit(2)
    return chosen


def run_all(ctx: Ctx, steps: list[Step], started: str, backbone: bool = True,
            deadline: float = DEADLINE_S) -> dict[str, Any]:
    """Preflight, then every step inside the total budget (writing the outputs after each),
    then the backbone until the deadline."""
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
    if backbone:
        results.append(run_backbone(ctx, results, t0, deadline))
        r = results[-1]
        print(f"[gpu_check] {r.name}: {r.status} ({r.seconds:.1f} s) {r.reason}",
              file=sys.stderr, flush=True)
    rep = report(ctx, results, started, time.perf_counter() - t0)
    write(ctx, rep)
    return rep


# --- the backbone: the rest of the call (gpu_check_backbone.py) --------------------------------

def backbone_step(ctx: Ctx, seconds: float, results: Sequence[Result]) -> Step:
    """``partialft pretrain`` sized for ``seconds`` by the check's own pretrain step."""
    measured = next(({**r.numbers, "seconds": r.seconds} for r in results
                     if r.name == "pretrain" and r.status == "pass"), {})
    size = plan_size(seconds, measured, ctx.smoke)
    title = (f"pretrain a stronger backbone: {size.categories} fractal categories, "
             f"{size.steps} steps x batch {size.batch} (sized for {seconds:.0f} s)")
    return Step("backbone", title, partialft("pretrain", *size.argv(), "--no-progress", "--out",
                                             str(ctx.work / "backbone")), seconds)


def run_backbone(ctx: Ctx, results: Sequence[Result], t0: float, deadline: float) -> Result:
    """Pretrain until done or the deadline (then killed), export its weights into the output."""
    left = deadline - (time.perf_counter() - t0) - EXPORT_S
    step = backbone_step(ctx, max(left, 0.0), results)
    least = SMOKE_MIN_BACKBONE_S if ctx.smoke else MIN_BACKBONE_S
    why = blocked(ctx, step) or (f"not run: {max(left, 0):.0f} s left before the "
                                 f"{deadline:.0f} s deadline" if left < least else None)
    if why:
        return skipped(step, why)
    log, env = ctx.work / "logs" / "backbone.log", step_env(ctx.smoke)
    code, seconds = run_command(step.argv, log, left, ctx.work, env)
    export = [sys.executable, str(Path(__file__).with_name("gpu_check_backbone.py")), "export",
              str(ctx.work / "backbone"), str(ctx.out)]
    ex_log = ctx.work / "logs" / "backbone-export.log"
    ex_code, ex_seconds = run_command(export, ex_log, EXPORT_S - 5, ROOT, env)
    line = next((ln for ln in tail(ex_log, 100_000).splitlines() if ln.startswith(MARK)), "")
    facts = json.loads(line.removeprefix(MARK)) if line else {}
    problems = judge(facts, ctx.smoke) if line else [f"export failed (exit code {ex_code})"]
    if code not in (0, None):
        problems.insert(0, f"exit code {code}")
    facts["stopped_at_deadline"] = code is None
    facts["summary"] = (f"{facts.get('steps_done')} of {facts.get('planned_steps')} steps, "
                        f"loss {facts.get('loss_first')} -> {facts.get('loss_last')}, "
                        f"{facts.get('weights_mb')} MB" + (
                            ", killed at the deadline: weights of its last resume point"
                            if code is None else ""))
    ok = "stopped at the deadline, last resume point exported" if code is None else "ok"
    return Result(step.name, step.title, display(step.argv), code, round(seconds + ex_seconds, 2),
                  step.budget_s, "fail" if problems else "pass", "; ".join(problems) or ok,
                  facts, (tail(log) + tail(ex_log)) if problems else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; 0 when every step passed, 1 when any failed."""
    args = parse(argv)
    out, forced, only = Path(args.out).resolve(), names(args.fail), names(args.only)
    work = Path(args.work or ("WORK" if args.dry_run else tempfile.mkdtemp(prefix="gpu_check-")))
    ctx = Ctx(args.cpu_smoke, out, work if args.dry_run else work.resolve(),
              choose_data(args.data_dir, args.cpu_smoke), forced)
    steps = [s for s in plan(ctx) if not only or s.name in only]
    deadline = args.deadline or (SMOKE_DEADLINE_S if ctx.smoke else DEADLINE_S)
    backbone = not only or "backbone" in only
    if args.dry_run:
        for s in steps:
            print(f"{s.name:<11} {s.budget_s:5.0f} s  {display(s.argv)}")
        if backbone:
            s = backbone_step(ctx, deadline - TOTAL_S - EXPORT_S, [])
            print(f"{s.name:<11} {'rest':>5} s  {display(s.argv)}  (at least "
                  f"{s.budget_s:.0f} s; steps sized at run time, killed at {deadline:.0f} s)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        rep = run_all(ctx, steps, started, backbone, deadline)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print((out / "gpu_check.md").read_text(encoding="utf-8"), end="")
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
