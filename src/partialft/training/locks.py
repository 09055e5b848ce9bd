"""Shared and exclusive locks on a directory, portable through the ``filelock`` package.

A process writing a directory (train, select, soup, report, ...) holds an exclusive lock on it
for as long as it writes; a process only reading a finished run (eval while it loads the model,
soup while it reads its ingredients) holds a shared one. Shared locks coexist; an exclusive one
excludes everything. A killed process never leaves a directory locked, and a finished directory
holds no lock file (a manual upload of it would publish one).

How, with only the exclusive lock ``filelock.FileLock`` offers (``flock`` on Linux and macOS,
``LockFileEx`` on Windows, an O_EXCL marker naming its pid where neither exists, which filelock
breaks once that pid is dead)::

    DIR/.lock                  the gate: held only while a process checks and takes a slot
    DIR/.lock.w.<pid>.<hex>    one slot per holder (w: writer, r: reader), locked while held

Under the gate, an acquirer probes every slot: one it can lock belongs to a dead process and is
removed; the others are live holders. A writer takes a slot only when none is live, a reader
only when no live one is a writer, so the gate orders every check with every take. A holder
removes its slot on release (while still holding it), and whoever holds the gate with no slot
left removes the gate file before letting it go; filelock re-opens a lock file whose inode was
removed while it waited (``st_nlink == 0``), so no waiter can hold a removed gate.

The API is small, so that the implementation can be swapped::

    lock = acquire(path, shared=False, wait=0.0, advice="...")  # or PartialFTError
    lock.release()  # also: ``with acquire(...):``
    with briefly(directory): ...  # a short exclusive section (check, then replace a file)

A refused process names the writer from its slot: ``run dir DIR is in use by pid N; <advice>``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError
from partialft.training.outputs import LOCK, MARKER, is_lock

_POLL_S = 0.05
_GATE_WAIT_S = 5.0  # the gate is held for a directory listing at most
READER, WRITER = "r", "w"


def _filelock() -> Any:
    with warnings.catch_warnings():  # without flock filelock warns that it uses marker files
        warnings.simplefilter("ignore")
        import filelock
    return filelock


def _lock_file(path: Path) -> Any:
    """One exclusive, non-reentrant filelock lock on ``path`` (not yet acquired)."""
    return _filelock().FileLock(str(path), timeout=0, is_singleton=False, thread_local=False)


def _take(lock: Any, timeout: float = 0.0) -> bool:
    try:
        lock.acquire(timeout=timeout, poll_interval=_POLL_S)
    except _filelock().Timeout:
        return False
    return True


def _drop(path: Path, lock: Any) -> None:
    """Remove ``path`` and release ``lock`` on it. With ``flock`` the file is unlinked while
    still held; filelock's Windows and marker locks remove their file on release themselves."""
    if _filelock().has_fcntl and sys.platform != "win32":
        path.unlink(missing_ok=True)
    lock.release()


class Lock:
    """A held lock; :meth:`release` (or leaving a ``with`` block) lets it go."""

    def __init__(self, directory: Path, slot: tuple[Path, Any] | None, shared: bool) -> None:
        self._dir = directory
        self._slot = slot
        self.shared = shared

    def release(self) -> None:
        if self._slot is None:
            return
        (path, lock), self._slot = self._slot, None
        _drop(path, lock)
        if not self._dir.is_dir():  # the holder removed the directory (a failed export)
            return  # and filelock would create it again for the gate
        gate = _lock_file(self._dir / LOCK)
        if _take(gate):  # else its holder removes it when it finds no slot left
            _release_gate(self._dir, gate)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(directory: str | Path, *, shared: bool = False, wait: float = 0.0,
            advice: str = "wait for it to finish or choose another --out.") -> Lock:
    """Lock ``directory`` (shared for readers, exclusive for writers), waiting up to ``wait``
    seconds for other holders; one sentence naming the writer when they do not let go.

    A reader of a directory that partialft did not mark (and no partialft process is locking),
    or that it cannot write, gets a no-op lock: no partialft process can be writing there.
    """
    path = Path(directory)
    if shared and not _lockable(path):
        return Lock(path, None, shared)
    if not path.is_dir():  # filelock would create it
        raise PartialFTError(f"cannot lock {path}: it is not a directory; name an existing "
                             "folder.")
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            slot, holders = _attempt(path, READER if shared else WRITER, deadline)
        except OSError:
            if shared:  # a read-only run dir (or file system): nobody can be writing it
                return Lock(path, None, shared)
            raise
        if slot is not None:
            return Lock(path, slot, shared)
        if time.monotonic() >= deadline:
            raise PartialFTError(f"run dir {path} is in use by {_name(holders)}; {advice}")
        time.sleep(_POLL_S)


def _lockable(path: Path) -> bool:
    """A reader locks a directory partialft marked, or one a partialft process is locking."""
    if (path / MARKER).is_file():
        return True
    try:
        return any(is_lock(p.name) for p in path.iterdir())
    except OSError:
        return False


def _attempt(path: Path, kind: str, deadline: float
             ) -> tuple[tuple[Path, Any] | None, list[tuple[str, int]]]:
    """Under the gate: a held slot of ``kind``, or None and the live holders in the way."""
    gate = _lock_file(path / LOCK)
    if not _take(gate, max(deadline - time.monotonic(), _GATE_WAIT_S)):
        return None, []
    try:
        holders = _live_holders(path)
        if holders and (kind == WRITER or any(k == WRITER for k, _ in holders)):
            return None, holders
        slot = path / f"{LOCK}.{kind}.{os.getpid()}.{secrets.token_hex(6)}"
        lock = _lock_file(slot)
        if not _take(lock):  # a fresh name: nobody else can hold it
            raise PartialFTError(f"could not lock {slot}, a file no other process uses; check "
                                 "that the file system supports locks.")
        return (slot, lock), []
    finally:
        _release_gate(path, gate)


def _slots(path: Path) -> list[tuple[Path, str, int]]:
    """The holder slots in ``path``: (file, kind, pid)."""
    found = []
    for item in path.iterdir():
        parts = item.name[len(LOCK):].split(".")
        if item.name.startswith(LOCK + ".") and len(parts) == 4 and parts[1] in (READER, WRITER) \
                and parts[2].isdigit():
            found.append((item, parts[1], int(parts[2])))
    return found


def _live_holders(path: Path) -> list[tuple[str, int]]:
    """(kind, pid) of every slot still held; slots of dead processes are removed."""
    live = []
    for item, kind, pid in _slots(path):
        probe = _lock_file(item)
        if _take(probe):
            _drop(item, probe)  # its holder died (a kill -9): the kernel let the lock go
        else:
            live.append((kind, pid))
    return live


def _release_gate(path: Path, gate: Any) -> None:
    """Let the gate go; remove its file first when no holder is left."""
    try:
        empty = not _slots(path)
    except OSError:
        empty = False
    if empty:
        _drop(path / LOCK, gate)
    else:
        gate.release()


def _name(holders: list[tuple[str, int]]) -> str:
    """``pid N`` of a writer holding the directory, else "another process" (readers)."""
    writers = [pid for kind, pid in holders if kind == WRITER]
    return f"pid {writers[0]}" if writers else "another process"


@contextmanager
def briefly(directory: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` for a short critical section, waiting for other
    holders: e.g. check that a file output is still as it was, then replace it. Nothing is
    created in the directory: the lock file lives in the temporary folder, named after the
    directory's identity (device and inode), so every process on this machine finds it."""
    st = os.stat(directory)
    key = hashlib.sha256(f"{st.st_dev}:{st.st_ino}".encode()).hexdigest()[:32]
    folder = Path(tempfile.gettempdir()) / "partialft-locks"
    folder.mkdir(exist_ok=True)
    path = folder / f"{key}.lock"
    lock = _lock_file(path)
    lock.acquire(timeout=-1, poll_interval=_POLL_S)
    try:
        yield
    finally:
        _drop(path, lock)
