"""How many CPU threads torch should use: the cores other processes leave free.

torch's default is one thread per core. When another process keeps a core busy, its OpenMP
threads wait for each other at every parallel region on a core they do not get, and a training
step slows down several times (docs/bench.md measures it); one thread per *free* core avoids
that, and a quiet machine still gets all its cores. The choice is made once, when a run starts
(so it does not change under a running job); ``--threads N`` or ``OMP_NUM_THREADS`` fix it.
"""

from __future__ import annotations

import os
import time


def _cpu_ticks() -> tuple[float, float]:
    """(busy, total) CPU seconds of all CPUs since boot (psutil: /proc/stat on Linux, the
    kernel's counters on macOS and Windows); idle and I/O wait count as not busy."""
    import psutil

    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(times)
    return total - idle, total


def busy_cores(window: float = 0.25) -> float | None:
    """How many cores other processes kept busy over the last ``window`` seconds."""
    first, own_first = _cpu_ticks(), os.times()
    time.sleep(window)
    second, own_second = _cpu_ticks(), os.times()
    if second[1] <= first[1]:
        return None
    cores = os.cpu_count() or 1
    busy = cores * (second[0] - first[0]) / (second[1] - first[1])
    own = (own_second.user + own_second.system - own_first.user - own_first.system) / window
    return max(0.0, busy - own)


def auto_threads(limit: int | None = None) -> int:
    """One thread per core no other process is using, at least 1 and at most ``limit``."""
    limit = limit or os.cpu_count() or 1
    others = busy_cores()
    if others is None:
        return limit
    cores = os.cpu_count() or limit
    return max(1, min(limit, round(cores - others)))


def set_threads(threads: int | None) -> int:
    """Use ``threads`` (or, unless OMP_NUM_THREADS says, the free cores); returns the count."""
    import torch

    from partialft.utils.limits import check_threads

    check_threads(threads)  # OpenMP crashes (a segfault) far above the machine's CPUs
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()  # the user chose already
    chosen = threads or auto_threads()
    torch.set_num_threads(chosen)
    return chosen
