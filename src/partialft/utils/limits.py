"""What the machine can hold: checks of memory-sized settings made before any work starts.

A setting too large for the machine otherwise fails late and badly: ``--threads 100000`` makes
OpenMP crash the process (a segfault), ``--img-size 100000`` gets it killed by the kernel's OOM
killer with no message, a huge ``--batch-size`` the same. Each check here raises one sentence
instead (the CLI's exit code 2).
"""

from __future__ import annotations

import os

from partialft.errors import named_option, option_error

THREADS_PER_CPU = 4  # more threads than 4 per logical CPU only wait for each other
MIN_WORKER_CAP = 64  # worker processes allowed on any machine (see max_workers)
MAX_IMG_SIZE = 4096  # 4x the largest input of timm's pretrained models (1024 px)
GIB = 1024 ** 3


def cpu_count() -> int:
    """Logical CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_threads() -> int:
    return THREADS_PER_CPU * cpu_count()


def check_threads(threads: int | None, name: str = "--threads") -> None:
    """Refuse a thread (or worker) count this machine cannot run: at most
    :data:`THREADS_PER_CPU` per logical CPU."""
    if threads is None:
        return
    cap = max_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= cap:
        raise option_error(f"{named_option(name)} is not valid; use a whole number from 1 to "
                           f"{cap} ({THREADS_PER_CPU} per logical CPU, {cpu_count()} here).",
                           value=repr(threads))


def max_workers() -> int:
    """Worker processes: the thread cap, but never below :data:`MIN_WORKER_CAP`, so the
    shipped configs (16 workers, for the GPU machines they describe) run on a laptop too."""
    return max(MIN_WORKER_CAP, max_threads())


def check_workers(workers: int | None, name: str = "--workers") -> None:
    """DataLoader worker processes: 0 (load in the main process) up to :func:`max_workers`
    (each is a process holding a copy of the dataset object: thousands exhaust the machine)."""
    if workers is None:
        return
    cap = max_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= cap:
        raise option_error(f"{named_option(name)} is not valid; use 0 (load in the main "
                           f"process) to {cap} (the larger of {MIN_WORKER_CAP} and "
                           f"{THREADS_PER_CPU} per logical CPU, {cpu_count()} here).",
                           value=repr(workers))


def check_img_size(img_size: int | None, name: str = "--img-size") -> None:
    if img_size is None:
        return
    if isinstance(img_size, bool) or not isinstance(img_size, int) or \
            not 1 <= img_size <= MAX_IMG_SIZE:
        raise option_error(f"{named_option(name)} is not valid; use a whole number from 1 to "
                           f"{MAX_IMG_SIZE} (4x the largest pretrained input size).",
                           value=repr(img_size))


def available_bytes(device: str | None = None) -> int | None:
    """Memory free for a batch: the GPU's free memory on a CUDA device, else the host's
    available memory (None when it cannot be read)."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    try:
        return int(psutil.virtual_memory().available)
    except (OSError, RuntimeError):
        return None


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 7B13"), else its architecture ("x86_64")."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:  # Linux: platform.processor() says only "x86_64"
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# float32 copies of one batch of images that are alive together at the least: the decoded
# batch, its augmented copy and the first layer's output of the same size
BATCH_COPIES = 3


def batch_bytes(batch_size: int, img_size: int, channels: int = 3) -> int:
    """A lower bound of the memory one batch needs (model weights and activations beyond the
    first layer come on top)."""
    return BATCH_COPIES * 4 * batch_size * channels * img_size * img_size


def check_batch_memory(batch_size: int, img_size: int, *, channels: int = 3,
                       device: str | None = None, flags: str = "`batch_size` or `img_size`"
                       ) -> None:
    """Refuse a batch whose images alone do not fit the memory free on ``device``. ``flags``:
    what to make smaller, options in backticks (errors.option_error)."""
    need = batch_bytes(batch_size, img_size, channels)
    free = available_bytes(device)
    if free is not None and need > free:
        where = "GPU" if device is not None and str(device).startswith("cuda") else "machine"
        raise option_error(f"a batch of {batch_size} images of {img_size}x{img_size} needs at "
                           f"least {need / GIB:.1f} GiB, more than the {free / GIB:.1f} GiB "
                           f"this {where} has free; use a smaller {flags}.")
