"""Runs the study's tasks in worker processes, resumably, with progress (see study.py)."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shlex
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from study_grid import TASKS_PER_WORKER, Task, command, is_done, present

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
