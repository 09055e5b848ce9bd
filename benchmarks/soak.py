"""Soak test: many short CPU epochs with periodic checkpoints; does memory stay flat?

    python benchmarks/soak.py --epochs 60 --checkpoint-every 2 --json soak.json

Trains test_vit (32 px) on synthetic:4 in this process and reads the resident set size (RSS)
after every epoch (psutil). Reports the RSS per
epoch and the least-squares slope after the warm-up epochs; a leak shows as a steady positive
slope (e.g. resume points, metrics or tqdm state kept alive each epoch).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

MIB = 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process (psutil, a partialft dependency)."""
    import psutil

    return psutil.Process().memory_info().rss


@contextmanager
def rss_per_epoch(samples: list[int], collect: bool = False) -> Iterator[None]:
    """Append the RSS after each epoch's validation and resume point (wraps loop._end_epoch);
    with ``collect``, run Python's full garbage collection first."""
    import partialft.training.loop as loop

    real = loop._end_epoch

    def end_epoch(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        if collect:
            gc.collect()
        samples.append(rss_bytes())

    loop._end_epoch = end_epoch
    try:
        yield
    finally:
        loop._end_epoch = real


def slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against their index (per epoch)."""
    from scipy.stats import linregress

    if len(values) < 2:
        return 0.0
    return float(linregress(range(len(values)), values).slope)


def soak(epochs: int, checkpoint_every: int, warmup: int, max_per_split: int = 40,
         collect: bool = False) -> dict[str, Any]:
    """Train ``epochs`` tiny epochs and return the RSS samples (MiB) and their slope."""
    from partialft.training.config import TrainConfig
    from partialft.training.train import train

    samples: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model="test_vit", pretrained=False, dataset="synthetic:4",
                          img_size=32, max_per_split=max_per_split, batch_size=8, epochs=epochs,
                          amp="no", seed=0, checkpoint_every=checkpoint_every,
                          out=str(Path(tmp) / "run"))
        start_rss, start = rss_bytes(), time.perf_counter()
        with rss_per_epoch(samples, collect), contextlib.redirect_stdout(sys.stderr):  # epoch lines
            train(cfg, overwrite=True, progress=False)
        seconds = time.perf_counter() - start
    mib = [s / MIB for s in samples]
    after = mib[warmup:]
    return {
        "epochs": epochs, "checkpoint_every": checkpoint_every, "warmup": warmup,
        "gc_collect_each_epoch": collect,
        "rss_start_mib": round(start_rss / MIB, 1), "rss_mib": [round(v, 2) for v in mib],
        "slope_mib_per_epoch": round(slope(after), 4),
        "growth_after_warmup_mib": round(after[-1] - after[0], 2) if after else 0.0,
        "max_minus_min_after_warmup_mib": round(max(after) - min(after), 2) if after else 0.0,
        "seconds": round(seconds, 1), "torch": torch.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60, help="epochs to train (5 steps each)")
    ap.add_argument("--checkpoint-every", type=int, default=2, help="resume point every N steps")
    ap.add_argument("--warmup", type=int, default=5, help="epochs left out of the slope")
    ap.add_argument("--gc", action="store_true",
                    help="gc.collect() after each epoch (tells a leak from uncollected cycles)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the result here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = soak(args.epochs, args.checkpoint_every, args.warmup, collect=args.gc)
    result["command"] = "python " + " ".join(["benchmarks/soak.py", *(argv or sys.argv[1:])])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
