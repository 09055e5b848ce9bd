"""Kill every verb with SIGKILL at every atomic write, rerun the same command, compare.

    python benchmarks/kill_all.py                 # every verb, every kill point
    python benchmarks/kill_all.py soup export     # some verbs
    python benchmarks/kill_all.py --sample        # the sample tests/test_kill_all_verbs.py runs

For each verb (a tiny CPU command, see CASES): run it once uninterrupted, recording every
``os.replace`` it makes (every atomic write, the ``.partialft`` marker and soup's renames
included); then, for each of them, fork a child that runs the same command and SIGKILLs itself
just *before* that rename (the temporary file written, not yet renamed) or just *after* it; rerun
the same command in this process (``--resume`` added for train and pretrain once the run dir is
marked) and check that it exits 0, that no temporary file (``*.tmp``,
a soup's ``.OUT.partial``/``.OUT.old``) is left, and that its results equal the uninterrupted
run's, compared on content (``Case.result``). Prints, per verb, the kill points tried and the
reruns that passed; exits 1 when one failed.

The killed run is a fork of this process (torch imported once: a kill point costs a partial
run plus a rerun, not an interpreter start), one thread, CPU, fixed seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

TINY = ["--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4", "--img-size", "32",
        "--max-per-split", "16", "--batch-size", "8", "--amp", "no", "--seed", "0",
        "--threads", "1"]
QUIET = ["--no-progress"]  # train and fapft (select has no progress bars)
TIMING = {"images_per_s", "elapsed_s", "wall_s", "select_s", "train_s", "total_s",
          "cost_x_full", "auto_s", "full_s", "time_s", "auto_mode_s", "probe_s", "extra_wall_s",
          "x_full_wall", "reason", "run_dir", "start_from"}


@dataclass
class Case:
    """One verb: its command (given the shared inputs and this attempt's output path), how to
    compare its results, and what to set up before each attempt."""

    name: str
    argv: Callable[[Path, Path], list[str]]
    result: Callable[[Path], Any]
    rerun: Callable[[list[str], Path], list[str]] = lambda argv, out: argv
    prepare: Callable[[Path, Path], None] | None = None
    out_is_file: bool = False
    # the kill points tests/test_kill_all_verbs.py tries (see points()); the marker write's
    # "first:before" is tried there for every verb that writes a directory
    sample: list[str] = field(default_factory=lambda: ["first:after", "mid:before",
                                                       "last:after"])


# --- comparisons -----------------------------------------------------------------------------

def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _strip(obj: Any) -> Any:
    """``obj`` without timing fields (at any depth)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return {k: v.float().flatten().tolist() for k, v in load_file(str(path)).items()}


def _metrics(run: Path) -> list[dict]:
    return [_strip(json.loads(x)) for x in (run / "metrics.jsonl").read_text().splitlines()]


def run_result(run: Path) -> dict[str, Any]:
    summary = _json(run / "summary.json")
    keep = ("best_acc", "final_acc", "test_acc", "layers", "trainable_params", "used")
    return {"metrics": _metrics(run) if (run / "metrics.jsonl").is_file() else None,
            "summary": {k: summary.get(k) for k in keep},
            "delta": _tensors(run / "delta.safetensors")}


def fapft_result(out: Path) -> dict[str, Any]:
    return {"full": run_result(out / "full"), "fapft": run_result(out / "fapft"),
            "angles": _json(out / "angles.json")["angles"],
            "layers": _json(out / "summary.json").get("fapft_layers")}


def fapft_auto_result(out: Path) -> dict[str, Any]:
    """The pipeline's results, its mode decision (pilots' validation accuracies, steps) and
    the pilots' epochs."""
    pilots = {m: _metrics(out / f"pilot-{m}") for m in ("large", "small")}
    return {**fapft_result(out), "decision": _strip(_json(out / "summary.json")[
        "mode_decision"]), "pilots": pilots}


def select_result(out: Path) -> dict[str, Any]:
    sel = _json(out / "selection.json")
    return {"layers": sel["layers"], "mode": sel["mode"],
            "scores": _json(out / "scores.json")["angles"]}


def compare_result(out: Path) -> dict[str, Any]:
    rows = _json(out / "comparison.json")["rows"]
    return [{k: r[k] for k in ("selector", "mode", "layers", "best_val_acc", "test_acc")}
            for r in rows]


def pretrain_result(out: Path) -> dict[str, Any]:
    return {"weights": _tensors(out / "model.safetensors"), "metrics": _metrics(out)}


def export_result(out: Path) -> dict[str, Any]:
    cfg = _json(out / "config.json")
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()
             if p.name in ("config.json", "model.safetensors", "README.md")}
    return {"weights": _tensors(out / "model.safetensors"), "config": cfg, "modes": modes}


def bench_result(out: Path) -> dict[str, Any]:
    return {"rows": [r["label"] for r in _json(out / "bench.json")["rows"]],
            "md": (out / "bench.md").is_file()}


# --- the verbs -------------------------------------------------------------------------------

def _copy_run(name: str) -> Callable[[Path, Path], None]:
    def prepare(inputs: Path, out: Path) -> None:
        shutil.copytree(inputs / name, out)
    return prepare


def _resume(argv: list[str], out: Path) -> list[str]:
    """train's and pretrain's documented rerun: --resume, once the run dir is marked (killed
    before that, nothing is there to resume and the same command starts it)."""
    return [*argv, "--resume"] if (out / ".partialft").is_file() else argv


def _cases() -> dict[str, Case]:
    train = ["train", *TINY, *QUIET, "--epochs", "2", "--checkpoint-every", "1"]
    cases = [
        Case("train", lambda i, o: [*train, "--out", str(o)], run_result,
             rerun=_resume),
        Case("fapft", lambda i, o: ["fapft", *TINY, *QUIET, "--epochs", "1", "--topk", "1",
                                    "--mode", "large", "--out", str(o)], fapft_result),
        Case("fapft-auto", lambda i, o: ["fapft", *TINY, *QUIET, "--epochs", "2", "--topk",
                                         "1", "--mode", "auto", "--out", str(o)],
             fapft_auto_result, sample=["mid:before", "mid:after", "last:after"]),
        Case("select", lambda i, o: ["select", "--selector", "grad", "--batches", "1", *TINY,
                                     "--epochs", "1", "--out", str(o)], select_result),
        Case("select-compare", lambda i, o: ["select", "--compare", "grad", "--batches", "1",
                                             *TINY, "--epochs", "1", "--out", str(o)],
             compare_result, sample=["mid:before", "last:after"]),
        Case("soup", lambda i, o: ["soup", str(i / "a"), str(i / "b"), "--out", str(o)],
             run_result),
        Case("soup-overwrite", lambda i, o: ["soup", str(i / "a"), str(i / "b"), "--out",
                                             str(o), "--overwrite"], run_result,
             prepare=_copy_run("old-soup"), sample=["prev:before", "last:before", "last:after"]),
        Case("eval", lambda i, o: ["eval", str(o), "--dataset", "synthetic:4",
                                   "--no-progress"], lambda o: _json(o / "eval.json"),
             prepare=_copy_run("a"), sample=["rest"]),
        Case("angles", lambda i, o: ["angles", str(i / "a"), "--out", str(o)],
             lambda o: _json(o), out_is_file=True, sample=["rest"]),
        Case("report", lambda i, o: ["report", str(i / "a"), str(i / "b"), "--out", str(o)],
             lambda o: _json(o / "report.json"), sample=["mid:before", "prev:after",
                                                         "last:after"]),
        Case("export", lambda i, o: ["export", str(i / "a"), "--out", str(o)], export_result,
             sample=["rest"]),
        Case("pretrain", lambda i, o: ["pretrain", "--out", str(o), "--categories", "3",
                                       "--steps", "3", "--batch-size", "4", "--warmup-steps",
                                       "1", "--val-per-category", "2", "--eval-every", "2",
                                       "--log-every", "1", "--checkpoint-every", "1",
                                       "--chains", "16", "--iters", "6", "--threads", "1",
                                       "--no-progress"], pretrain_result,
             rerun=_resume),
        Case("bench", lambda i, o: ["bench", "--model", "test_vit", "--img-size", "32",
                                    "--methods", "linear", "--batch-size", "2", "--warmup", "1",
                                    "--steps", "1", "--threads", "1", "--out", str(o)],
             bench_result, sample=["rest"]),
    ]
    return {c.name: c for c in cases}


CASES = _cases()


def make_inputs(root: Path) -> Path:
    """Two tiny finished linear runs from one base (a, b) and a soup of them (old-soup)."""

    for name, lr in (("a", "1e-3"), ("b", "3e-3")):
        _ok(cli(["train", *TINY, *QUIET, "--method", "linear", "--epochs", "1", "--lr", lr,
                  "--out", str(root / name)]))
    _ok(cli(["soup", str(root / "a"), str(root / "b"), "--no-eval", "--out",
              str(root / "old-soup")]))
    return root


def _ok(code: int) -> None:
    if code != 0:
        raise RuntimeError(f"setting up the inputs failed (exit {code})")


# --- killing ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet(err: Path | None = None) -> Iterator[None]:
    """stdout to /dev/null, stderr to ``err`` (or /dev/null), at the descriptor level."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    errfd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if err else os.dup(null)
    os.dup2(null, 1)
    os.dup2(errfd, 2)
    try:  # and at the Python level, where pytest's capture replaces sys.stdout/stderr
        with open(os.devnull, "w") as out_fh, open(2, "w", closefd=False) as err_fh, \
                contextlib.redirect_stdout(out_fh), contextlib.redirect_stderr(err_fh):
            yield
            err_fh.flush()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null, errfd):
            os.close(fd)


def cli(argv: list[str]) -> int:
    """``partialft ARGV`` in this process; its exit code (argparse's too)."""
    from partialft.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def record_replaces(argv: list[str]) -> tuple[int, list[str]]:
    """Run ``partialft ARGV`` here; its exit code and the file names its os.replace calls
    renamed onto, in order."""

    seen: list[str] = []
    real = os.replace

    def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        seen.append(os.path.basename(str(dst)))
        real(src, dst, *a, **kw)

    os.replace = replace
    try:
        with _quiet():
            code = cli(argv)
    finally:
        os.replace = real
    return code, seen


def run_killed(argv: list[str], nth: int, when: str) -> bool:
    """Run ``partialft ARGV`` in a forked child that SIGKILLs itself just before or after its
    ``nth`` os.replace (1-based); True when it died there."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller
        code = 3
        try:

            count, real = [0], os.replace

            def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
                count[0] += 1
                if count[0] == nth and when == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
                real(src, dst, *a, **kw)
                if count[0] == nth and when == "after":
                    os.kill(os.getpid(), signal.SIGKILL)

            os.replace = replace
            with _quiet():
                code = cli(argv)
        finally:
            os._exit(code if isinstance(code, int) else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def leftovers(root: Path) -> list[Path]:
    """Temporary files or folders a killed write left under ``root``."""
    return sorted(p for p in root.rglob("*") if p.name.endswith(".tmp")
                  or p.name.endswith(".partial") or p.name.endswith(".old"))


def points(replaces: list[str], sample: list[str] | None) -> list[tuple[int, str]]:
    """Kill points (nth os.replace, before|after): all of them, or a sample (``first``: the
    first marker write, ``mid``, ``prev`` (the one before the last), ``last``; or ``all``, or
    ``rest``: all but just before the marker)."""
    every = [(n, w) for n in range(1, len(replaces) + 1) for w in ("before", "after")]
    if sample is None or "all" in sample:
        return every
    marker = replaces.index(".partialft") + 1 if ".partialft" in replaces else 1
    if "rest" in sample:  # all but the marker's "before" (the tests try that one on its own)
        return [p for p in every if p != (marker, "before") or ".partialft" not in replaces]
    where = {"first": marker, "mid": (len(replaces) + 1) // 2, "prev": max(1, len(replaces) - 1),
             "last": len(replaces)}
    return sorted({(where[s.split(":")[0]], s.split(":")[1]) for s in sample})


@dataclass
class Outcome:
    verb: str
    tried: int = 0
    passed: int = 0
    failures: list[str] = field(default_factory=list)


def sweep(case: Case, inputs: Path, work: Path, sample: bool = False) -> Outcome:
    """Kill ``case`` at each of its kill points and rerun it; see the module docstring."""

    outcome = Outcome(case.name)
    ref = work / "ref" / ("out.json" if case.out_is_file else "out")
    ref.parent.mkdir(parents=True)
    if case.prepare:
        case.prepare(inputs, ref)
    code, replaces = record_replaces(case.argv(inputs, ref))
    if code != 0:
        outcome.failures.append(f"uninterrupted run exited {code}")
        return outcome
    expected = case.result(ref)
    for i, (nth, when) in enumerate(points(replaces, case.sample if sample else None)):
        attempt = work / f"k{i}"
        attempt.mkdir()
        out = attempt / ("out.json" if case.out_is_file else "out")
        if case.prepare:
            case.prepare(inputs, out)
        argv = case.argv(inputs, out)
        outcome.tried += 1
        where = f"{when} os.replace #{nth} ({replaces[nth - 1]})"
        if not run_killed(argv, nth, when):
            outcome.failures.append(f"{where}: the child was not killed there")
            continue
        err = work / f"k{i}.err"
        with _quiet(err):
            code = cli(case.rerun(argv, out))
        # killed after its last write, the command had finished: a rerun without --overwrite
        # may say so ("already exists", exit 2), as after any finished run
        finished = (nth, when) == (len(replaces), "after") and code == 2 and (
            "already exists" in err.read_text())
        problem = _check(0 if finished else code, attempt, out, case, expected)
        if problem:
            problem += f" [{err.read_text().strip()[-300:]}]"
        err.unlink()
        if problem:
            outcome.failures.append(f"{where}: {problem}")
        else:
            outcome.passed += 1
        shutil.rmtree(attempt, ignore_errors=True)
    return outcome


def _check(code: int, attempt: Path, out: Path, case: Case, expected: Any) -> str | None:
    if code != 0:
        return f"rerun exited {code}"
    left = leftovers(attempt)
    if left:
        return f"left {left[0].relative_to(attempt)}"
    try:
        got = case.result(out)
    except (OSError, ValueError, KeyError) as exc:
        return f"results unreadable ({exc})"
    return None if got == expected else "results differ from the uninterrupted run"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("verbs", nargs="*", help=f"verbs to sweep (default all: "
                        f"{', '.join(CASES)})")
    parser.add_argument("--sample", action="store_true", help="only the tests' sample of "
                        "kill points")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    bad = [v for v in args.verbs if v not in CASES]
    if bad:
        parser.error(f"unknown verb {bad[0]}; choose from {', '.join(CASES)}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = make_inputs(root / "inputs")
        for name in args.verbs or CASES:
            start = time.perf_counter()
            outcome = sweep(CASES[name], inputs, root / name, sample=args.sample)
            ok &= not outcome.failures and outcome.tried > 0
            print(f"{name:<15} kill points tried {outcome.tried:4d}  reruns passed "
                  f"{outcome.passed:4d}  ({time.perf_counter() - start:.0f} s)", flush=True)
            for failure in outcome.failures:
                print(f"    FAILED {failure}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    sys.exit(main())
