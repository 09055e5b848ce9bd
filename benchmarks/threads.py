"""CPU threads: partialft's default against fixed thread counts, quiet and beside a busy process.

    .venv/bin/python benchmarks/threads.py --out /tmp/threads            # the docs/bench.md table
    .venv/bin/python benchmarks/threads.py --rounds 1 --epochs 1 --quick  # a fast look

Runs the same command, ``partialft train --dataset digits --epochs 1 --batch-size 64`` (full
fine-tuning of the bundled backbone), as a fresh process per measurement, under three thread
settings (partialft's default with ``OMP_NUM_THREADS`` unset, ``--threads 1``, ``--threads 2``)
and two loads (quiet; one competing process spinning one core, started before and stopped after
each measurement), plus ``--threads 2`` with ``OMP_WAIT_POLICY=PASSIVE`` to test the cause.
The settings alternate within each round (A B C A B C ...: ``--rounds``), so
a drift in the machine's background load spreads over all of them. Reported: the training
images/s each run's ``summary.json`` records (``images_per_s``, the training loop only) and the
threads the run used (``threads``). Writes ``threads.json`` and ``threads.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# name -> (flags, extra environment); the last row is the diagnosis: the same two threads with
# OpenMP's waiting threads sleeping instead of spinning
SETTINGS = {"default": ([], {}), "1 thread": (["--threads", "1"], {}),
            "2 threads": (["--threads", "2"], {}),
            "2 threads, passive wait": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"})}
LOADS = ("quiet", "one busy process")


def _spin() -> None:
    """The competing process: one core kept busy."""
    while True:
        pass


def measure(extra: list[str], more_env: dict[str, str], epochs: int,
            max_per_split: int | None) -> dict[str, Any]:
    """One ``partialft train`` in a fresh process: its images/s and threads."""
    drop = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
    env = {**{k: v for k, v in os.environ.items() if k not in drop}, **more_env}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = [sys.executable, "-m", "partialft", "train", "--dataset", "digits", "--epochs",
                str(epochs), "--batch-size", "64", "--no-progress", "--log-with", "none",
                "--out", str(out), *extra]
        if max_per_split:
            argv += ["--max-per-split", str(max_per_split)]
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads((out / "summary.json").read_text())
    return {"img_s": summary["images_per_s"], "threads": summary["threads"]}


def run(rounds: int, epochs: int, max_per_split: int | None) -> list[dict[str, Any]]:
    results = []
    for rnd in range(rounds):
        for load in LOADS:
            for name, (extra, more_env) in SETTINGS.items():
                spinner = None
                if load != "quiet":
                    spinner = mp.Process(target=_spin, daemon=True)
                    spinner.start()
                    time.sleep(1.0)  # the competitor is running before the run starts
                try:
                    row = measure(extra, more_env, epochs, max_per_split)
                finally:
                    if spinner is not None:
                        spinner.terminate()
                        spinner.join()
                row.update(round=rnd, load=load, setting=name, loadavg=os.getloadavg()[0])
                print(f"round {rnd} {load:<16} {name:<23} {row['img_s']:7.1f} img/s, "
                      f"{row['threads']} thread(s)", flush=True)
                results.append(row)
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| load | setting | threads used | img/s per round | median img/s |",
             "|---|---|---|---|---:|"]
    for load in LOADS:
        for name in SETTINGS:
            rows = [r for r in results if r["load"] == load and r["setting"] == name]
            used = sorted({r["threads"] for r in rows})
            per = ", ".join(f"{r['img_s']:.0f}" for r in rows)
            lines.append(f"| {load} | {name} | {', '.join(map(str, used))} | {per} | "
                         f"{statistics.median(r['img_s'] for r in rows):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/threads"))
    parser.add_argument("--rounds", type=int, default=2, help="A B C rounds (default 2)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="400 images per split")
    args = parser.parse_args()
    start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = run(args.rounds, args.epochs, 400 if args.quick else None)
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"started": start, "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "results": results}
    (args.out / "threads.json").write_text(json.dumps(info, indent=2) + "\n")
    (args.out / "threads.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
