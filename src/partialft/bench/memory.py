"""Peak-memory meters for the bench: CUDA allocator peaks, or the process's peak RSS on a CPU.

On CUDA the peak is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``: the
bytes of live tensors (weights, gradients, optimizer state, activations), as in the paper's Fig. 5.

A CPU has no allocator statistics, so the bench reports the process's *peak resident set size*
instead: Linux's ``VmHWM`` (``/proc/self/status``), whose high-water mark is reset before each
phase by writing ``5`` to ``/proc/self/clear_refs`` (and glibc's ``malloc_trim`` first returns
freed heap to the system). This counts everything resident (the Python interpreter, torch's
libraries, the model), so it is labelled ``rss`` and comes with the increase over the phase's
starting RSS. Where the reset is not possible, the meter says so and reports ``None``.

:func:`saved_tensor_bytes` is an exact, noise-free companion on any device: the bytes autograd
saves for backward in one training forward (what the frozen prefix saves is nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
MB = 2**20


def _status_kb(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _malloc_trim() -> None:
    """Give freed heap back to the OS so the next phase's peak RSS starts from live memory."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # not glibc
        pass


def _reset_rss_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")  # Linux >= 4.0: reset VmHWM to the current RSS
    except OSError:
        return False
    return True


class PeakMemory:
    """Measure one phase's peak memory: ``start()``, run the phase, ``stop() -> (peak, delta)``.

    Values are MiB; ``kind`` says what was measured (``cuda`` or ``rss``).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda" if device.type == "cuda" else "rss"
        self.base_mb: float | None = None
        self.note = ""
        if self.kind == "rss" and not sys.platform.startswith("linux"):
            self.note = (f"CPU peak memory is measured only on Linux (its VmHWM), not on "
                         f"{sys.platform}, so CPU memory is not reported")
        elif self.kind == "rss" and (_status_kb("VmHWM") is None or not _reset_rss_peak()):
            self.note = ("peak RSS could not be reset on this system (no writable "
                         "/proc/self/clear_refs), so CPU memory is not reported")

    def start(self) -> None:
        gc.collect()
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base_mb = torch.cuda.memory_allocated(self.device) / MB
            return
        _malloc_trim()
        if not self.note and _reset_rss_peak():
            self.base_mb = (_status_kb("VmRSS") or 0) / 1024

    def stop(self) -> tuple[float | None, float | None]:
        """(peak MiB, peak minus the MiB in use at ``start``); (None, None) when unmeasurable."""
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / MB
        elif self.base_mb is None:
            return None, None
        else:
            peak = (_status_kb("VmHWM") or 0) / 1024
        return round(peak, 2), round(peak - (self.base_mb or 0.0), 2)


def saved_tensor_bytes(forward: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct tensors autograd saves for backward while ``forward()`` runs.

    Counted with ``torch.autograd.graph.saved_tensors_hooks``; a storage saved by several ops
    counts once, and storages of ``exclude`` (the model's parameters, resident anyway) not at
    all. Ops whose inputs need no gradient record no graph, so a frozen prefix adds 0.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())
