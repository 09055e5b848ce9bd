"""Shared and exclusive locks on a directory's ``.lock`` file (``fcntl.flock``).

A process writing a directory (train, select, soup, report, ...) holds an exclusive lock on
``DIR/.lock`` for as long as it writes; a process only reading a finished run (eval while it
loads the model, soup while it reads its ingredients) holds a shared one. Shared locks coexist;
an exclusive one excludes everything. The kernel releases a lock when its process dies, so a
killed command never leaves a directory locked.

The API is small, so that the implementation (``fcntl.flock`` today) can be swapped::

    lock = acquire(path, shared=False, wait=0.0, advice="...")  # or PartialFTError
    lock.release()  # also: ``with acquire(...):``
    with briefly(directory): ...  # a short exclusive section (check, then replace a file)

The holder of an exclusive lock writes ``pid N`` into the file (and clears it on release), so a
refused process names it: ``run dir DIR is in use by pid N; <advice>``.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from partialft.errors import PartialFTError
from partialft.training.outputs import LOCK, MARKER

_POLL_S = 0.05


class Lock:
    """A held lock; :meth:`release` (or leaving a ``with`` block) lets it go."""

    def __init__(self, fh: IO[str] | None, shared: bool) -> None:
        self._fh = fh
        self.shared = shared

    def release(self) -> None:
        if self._fh is None:
            return
        if not self.shared:  # nobody holds it now: name nobody
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.flush()
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(directory: str | Path, *, shared: bool = False, wait: float = 0.0,
            advice: str = "wait for it to finish or choose another --out.") -> Lock:
    """Lock ``directory`` (shared for readers, exclusive for writers), waiting up to ``wait``
    seconds for another holder; one sentence naming the holder when it does not let go.

    A reader of a directory without ``.lock`` that partialft did not mark, or that it cannot
    write, gets a no-op lock: no partialft process can be writing there.
    """
    path = Path(directory)
    fh = _open(path / LOCK, shared)
    if fh is None:
        return Lock(None, shared)
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                owner = _holder(fh)
                fh.close()
                raise PartialFTError(f"run dir {path} is in use by {owner}; {advice}") from None
            time.sleep(_POLL_S)
    if not shared:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
    return Lock(fh, shared)


def _open(path: Path, shared: bool) -> IO[str] | None:
    """The lock file, opened; a reader creates none in a directory partialft did not mark (and
    reads a read-only one unlocked: no partialft process can be writing there either)."""
    if not shared:
        return open(path, "a+")  # noqa: SIM115 - held open while locked
    try:
        return open(path)  # noqa: SIM115
    except FileNotFoundError:
        if not (path.parent / MARKER).is_file():
            return None
    except OSError:
        return None
    try:
        return open(path, "a+")  # noqa: SIM115
    except OSError:
        return None


def _holder(fh: IO[str]) -> str:
    """``pid N`` of a live exclusive holder, else "another process" (readers write no pid)."""
    fh.seek(0)
    text = fh.read().strip()
    try:
        os.kill(int(text.removeprefix("pid ")), 0)
    except (ValueError, ProcessLookupError, OverflowError):
        return "another process"
    except PermissionError:
        pass  # alive, another user's
    return text


@contextmanager
def briefly(directory: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` itself (not a file in it) for a short critical
    section, waiting for other holders: e.g. check that a file output is still as it was, then
    replace it. Nothing is created in the directory."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
