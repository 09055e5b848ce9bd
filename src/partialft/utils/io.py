"""Crash-safe file writes, and the record of what partialft wrote into its output directories.

Every file goes through :func:`atomic_write` (a temporary file next to the target, fsync, then
``os.replace``). A directory partialft owns carries a marker file, ``.partialft`` (JSON), whose
``files`` manifest maps each path partialft wrote there (relative, '/'-separated) to the
SHA-256 and size of the bytes it wrote; ``--overwrite`` deletes only files whose bytes still
match (see :mod:`partialft.training.outputs`). A write records itself in the manifest of the
nearest marked directory above it *before* its ``os.replace``, keeping the previous entry as
``prev``: a crash between the two leaves either version recognised as partialft's.

Writers that do not go through :func:`atomic_write` record themselves with
:func:`append_line` (appends), :func:`record_file` (a file a third-party writer finished, hashed
from its bytes on disk) or :func:`record_open` (a file a third-party writer is still growing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = ".partialft"
MANIFEST_VERSION = 1  # markers without it predate the manifest: nothing is recorded in them
# partialft's temporary files and folders: '.' + target name + '.pft-' + 8 mkstemp characters +
# '.tmp'; only names of this form are removed as stale (a user's '.x.abcdefgh.tmp' is not)
TMP_INFIX, TMP_SUFFIX = ".pft-", ".tmp"
TMP_RE = re.compile(r"^\..+\.pft-[a-z0-9_]{8}\.tmp$")
_CHUNK = 1 << 20


def tmp_prefix(name: str) -> str:
    """The mkstemp/mkdtemp prefix of a temporary file or folder for target ``name``."""
    return f".{name}{TMP_INFIX}"


def is_tmp(name: str) -> bool:
    """True for the name of a temporary file or folder partialft made (see :data:`TMP_RE`)."""
    return bool(TMP_RE.match(name))


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically (recorded first)."""
    path = Path(path)
    make_parents(path)
    if path.name == MARKER:  # only the directory's lock holder writes its marker, so a temporary
        remove_stale_tmp_of(path)  # marker file beside it is one a killed write left: remove it
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=tmp_prefix(path.name), suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes 0600 and some writers (safetensors) recreate the file 0600: give it the
        # user's usual permissions once it is written
        os.chmod(tmp, file_mode())
        with open(tmp, "rb") as fh:
            digest, size = _digest(fh)
            os.fsync(fh.fileno())
        if path.name != MARKER:
            _record(path, {"sha256": digest, "size": size})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_tmp_of(target: str | Path) -> None:
    """Delete the temporary files an atomic write of ``target`` left when killed before its
    rename (``.NAME.pft-XXXXXXXX.tmp``: partialft's own names only, a user's look-alike stays).
    Call it only while holding the lock every writer of ``target`` holds: no other process is
    writing one then."""
    target = Path(target)
    prefix = tmp_prefix(target.name)
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if (entry.name.startswith(prefix) and is_tmp(entry.name) and entry.is_file()
                and not entry.is_symlink()):
            entry.unlink(missing_ok=True)


def make_parents(path: Path) -> None:
    """Create the missing folders above ``path``, each recorded (``{"dir": true}``) in the
    manifest above it before it is made, so that a folder partialft made is known as its own
    even when a crash leaves it empty."""
    missing = [p for p in Path(os.path.abspath(path)).parents if not p.exists()]
    for folder in reversed(missing):
        _record(folder, {"dir": True})
        folder.mkdir(exist_ok=True)


def file_mode() -> int:
    """The permissions a new file gets under the user's umask (reading the umask means setting
    it: put it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line and flush it to disk (used for metrics.jsonl); recorded first."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode()
    sha = hashlib.sha256()
    size = len(data)
    if path.is_file():
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                sha.update(chunk)
                size += len(chunk)
    sha.update(data)
    _record(path, {"sha256": sha.hexdigest(), "size": size})
    with open(path, "ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def record_file(path: str | Path) -> None:
    """Record a file another library wrote (an exported model, a tracker's log), by its bytes."""
    path = Path(path)
    if path.is_symlink():
        _record(path, {"link": os.readlink(path)})
    elif path.is_file():
        with open(path, "rb") as fh:
            digest, size = _digest(fh)
        _record(path, {"sha256": digest, "size": size})


def record_open(path: str | Path) -> None:
    """Record a file a third-party writer created and is still appending to (a TensorBoard
    event file): known by name until :func:`record_file` records its final bytes."""
    _record(Path(path), {"open": True})


def record_claim(folder: str | Path, claim: dict[str, Any] | None) -> None:
    """Record ``folder`` as one partialft gives a third-party writer (a tracker's log folder),
    before that writer starts; ``claim`` describes what it will make there, until its files are
    recorded one by one (then call again with None)."""
    _record(Path(folder), {"dir": True, **({"claim": claim} if claim else {})})


def record_dir(path: str | Path, kind: str) -> None:
    """Record ``path`` as a sub-directory of kind ``kind`` that partialft creates (a pipeline's
    stage) in the manifest of the marked directory above it; call it before creating it."""
    path = Path(os.path.abspath(path))  # owner_of answers with an absolute path
    owner = owner_of(path)
    marker = _manifest_marker(owner)
    if owner is None or marker is None:
        return
    rel = path.relative_to(owner).as_posix()
    if marker.setdefault("dirs", {}).get(rel) != kind:
        marker["dirs"][rel] = kind
        write_json_marker(owner, marker)


def owner_of(path: str | Path) -> Path | None:
    """The nearest marked directory above ``path`` (``path`` itself excluded), or None."""
    for parent in Path(os.path.abspath(path)).parents:
        if (parent / MARKER).is_file():
            return parent
    return None


def read_json_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def write_json_marker(folder: Path, marker: dict[str, Any]) -> None:
    atomic_write_text(folder / MARKER, json.dumps(marker, indent=1) + "\n")


def _record(path: Path, entry: dict[str, Any]) -> None:
    """Set ``path``'s entry in the manifest of its marked directory (a read-modify-write of the
    marker, itself an atomic write); entries of files no longer there are dropped."""
    owner = owner_of(path)
    marker = _manifest_marker(owner)
    if owner is None or marker is None:
        return
    rel = Path(os.path.abspath(path)).relative_to(owner).as_posix()
    files = marker.get("files")
    files = files if isinstance(files, dict) else {}
    old = files.get(rel)
    if isinstance(old, dict) and old.get("sha256") and old.get("sha256") != entry.get("sha256"):
        entry = {**entry, "prev": {"sha256": old["sha256"], "size": old.get("size")}}
    files = {k: v for k, v in files.items() if os.path.lexists(owner / k)}
    files[rel] = entry
    marker["files"] = files
    write_json_marker(owner, marker)


def _manifest_marker(folder: Path | None) -> dict[str, Any] | None:
    """The marker of ``folder`` when it is one with a manifest (not a stray '.partialft' file of
    someone else's, nor a marker from before the manifest)."""
    marker = read_json_marker(folder) if folder is not None else None
    if marker is None or marker.get("manifest") != MANIFEST_VERSION or "kind" not in marker:
        return None
    return marker


def _digest(fh: Any) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    for chunk in iter(lambda: fh.read(_CHUNK), b""):
        sha.update(chunk)
        size += len(chunk)
    return sha.hexdigest(), size


def sha256_and_size(path: str | Path) -> tuple[str, int]:
    """SHA-256 and size of a file's bytes."""
    with open(path, "rb") as fh:
        return _digest(fh)
