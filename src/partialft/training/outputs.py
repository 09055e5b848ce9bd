"""Where partialft may write, and what ``--overwrite`` may delete.

Every directory partialft creates for its outputs (a run dir, a fapft pipeline, a soup, a
report, ...) gets a marker file, ``.partialft``, before anything else is written into it. The
marker names the directory's *kind* and, for pipelines, the settings a rerun must match.

The rules every verb follows (one sentence and exit code 2 when one is broken):

- ``--out`` is never the current directory or one of its parents, never an input of the
  command (checkpoint, config, layer spec, angles, data dir, ingredient, reference) and never
  inside or above one;
- ``--out`` is never inside another partialft output, except a pipeline's own stages (a
  directory opened while the marked directory above it is held by this process, recorded in
  that directory's manifest as a sub-directory of its kind);
- an existing ``--out`` is used only when it is empty (partialft's lock and temporary files
  aside) or carries the marker;
- ``--overwrite`` replaces only an output of the verb's own kind, and clears it only when every
  file in it is one partialft recorded writing (the marker's manifest, see
  :mod:`partialft.utils.io`) with the bytes it wrote, and every sub-directory a recorded stage;
  anything else stops it, and nothing is deleted.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError, article, option_error
from partialft.training.logfiles import claims
from partialft.utils.embedded import CARD, body_sha256, read_embedded
from partialft.utils.io import (
    MANIFEST_VERSION,
    MARKER,
    is_tmp,
    owner_of,
    read_json_marker,
    record_dir,
    sha256_and_size,
    write_json_marker,
)

LOCK = ".lock"  # the gate; holders' slots are LOCK.<kind>.<pid>.<hex> (training/locks.py)
KINDS = ("train", "soup", "fapft", "select", "demo", "report", "bench", "pretrain", "export",
         "search")
# partialft's own bookkeeping, never in a manifest


def is_lock(name: str) -> bool:
    """True for partialft's lock files (the gate and the holders' slots)."""
    return name == LOCK or name.startswith(LOCK + ".")


def _ours(name: str) -> bool:
    return name == MARKER or is_lock(name)


# Marked directories this process holds open (RunDir), each with a check that it still does:
# a directory opened inside one of them is one of its stages (fapft's full/, select's probe/,
# the demo's runs) and may nest there.
_HELD: dict[Path, Callable[[], bool]] = {}


# kinds whose finished outputs carry their marker in their model card, not in a file of its own
# (see :mod:`partialft.utils.embedded`): a folder people upload as it is
EMBEDDED_KINDS = ("export",)


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The marker of directory ``path`` (``.partialft``, else the one a finished export carries
    in its model card), or None when it has none (or an unreadable one)."""
    if (Path(path) / MARKER).exists():
        data = read_json_marker(Path(path))
        return data if data is not None and data.get("kind") in KINDS else None
    data = read_embedded(path)
    return data if data is not None and data.get("kind") in EMBEDDED_KINDS else None


def write_marker(path: Path, kind: str, settings: dict[str, Any] | None = None) -> None:
    """Mark ``path`` as a ``kind`` directory with an empty manifest (see :mod:`utils.io`)."""
    write_json_marker(path, {"kind": kind, "settings": settings or {},
                             "manifest": MANIFEST_VERSION, "files": {}, "dirs": {}})


def hold(path: Path, still_held: Callable[[], bool]) -> None:
    """Note that this process holds marked directory ``path`` while ``still_held()``."""
    for held, check in list(_HELD.items()):  # forget the ones closed since
        if not check():
            del _HELD[held]
    _HELD[Path(path).resolve()] = still_held


def _held(path: Path) -> bool:
    check = _HELD.get(path.resolve())
    if check is not None and not check():
        del _HELD[path.resolve()]
        return False
    return check is not None


def own_stage(path: Path, kind: str) -> None:
    """Record ``path`` as a stage of the held marked directory above it, before creating it."""
    owner = owner_of(path)
    if owner is None or not _held(owner):
        return
    rel = Path(os.path.abspath(path)).relative_to(owner).parts
    if not any(is_tmp(part) for part in rel):  # a bench's scratch runs go with their folder
        record_dir(path, kind)


def check_out_path(out: str | Path, inputs: Iterable[str | Path | None] = (),
                   flag: str = "--out") -> Path:
    """Refuse an output path that is the working directory (or above it) or meets an input."""
    if str(out).strip() == "":
        raise PartialFTError(f"{flag} is empty; name a new directory such as runs/my-run.")
    path = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        where = "the current directory" if path == cwd else "a parent of the current directory"
        raise PartialFTError(f"{flag} {out} is {where}; name a new directory inside it, such as "
                             f"{flag} runs/my-run.")
    for given in inputs:
        if given is None or str(given) == "":
            continue
        src = Path(given).expanduser().resolve()
        if src == path:
            raise PartialFTError(f"{flag} {out} is also an input of this command ({given}); "
                                 "choose a new directory.")
        if src in path.parents:
            raise PartialFTError(f"{flag} {out} is inside the input {given}; choose a directory "
                                 "outside it.")
        if path in src.parents:
            raise PartialFTError(f"{flag} {out} contains the input {given}; choose a directory "
                                 "that does not.")
    return path


def check_out_file(out: str | Path, *, overwrite: bool, inputs: Iterable[str | Path | None],
                   ours: Callable[[Path], bool], what: str, flag: str = "--out") -> Path:
    """Check a single output file: not an input, and replaced only when partialft wrote it."""
    path = check_out_path(out, inputs, flag)
    if path.is_dir():
        raise option_error(f"{named(flag, out)} is a directory; name a file, such as "
                           f"{what}.json.")
    if path.exists():
        if not overwrite:
            raise option_error(f"{named(flag, out)} already exists; pass `overwrite=True` to "
                               "replace it.")
        if not ours(path):
            raise option_error(f"{named(flag, out)} is not a partialft {what} file; "
                               "`overwrite=True` replaces only files partialft wrote, so choose "
                               "another name.")
    return path


def foreign_entries(path: str | Path, kind: str | None = None) -> list[Path]:
    """Everything under marked directory ``path`` that partialft did not record writing, or
    whose bytes changed since (sorted); ``[path]`` when it is not a marked ``kind`` directory.

    A recorded sub-directory (a pipeline's stage) is checked against its own manifest; a marked
    sub-directory the manifest does not record, a symlink, or any unrecorded file is foreign.
    """
    root = Path(path)
    marker = read_marker(root)
    if marker is None or (kind is not None and marker["kind"] != kind):
        return [root]
    files, dirs = _manifest(marker)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in list(dirnames):
            sub = here / name
            rel = sub.relative_to(root).as_posix()
            if sub.is_symlink() or is_tmp(name) or rel in dirs or read_marker(sub) is not None:
                dirnames.remove(name)
                found += _foreign_dir(sub, rel, files, dirs)
            elif not _made(rel, files) and not _claimed(root, sub, files):
                # a folder of the user's, even an empty one
                dirnames.remove(name)
                found.append(sub)
        for name in filenames:
            item = here / name
            if here == root and _ours(name) or is_tmp(name):
                continue
            rel = item.relative_to(root).as_posix()
            if not _unchanged(item, files.get(rel)) and not _claimed(root, item, files):
                found.append(item)
    return sorted(found)


def _manifest(marker: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    files, dirs = marker.get("files"), marker.get("dirs")
    return (files if isinstance(files, dict) else {}), (dirs if isinstance(dirs, dict) else {})


def _made(rel: str, files: dict[str, Any]) -> bool:
    """True for a folder partialft recorded making, or one holding a file it recorded (made by
    a third-party writer such as TensorBoard)."""
    entry = files.get(rel)
    return (isinstance(entry, dict) and bool(entry.get("dir"))) or any(
        key.startswith(rel + "/") for key in files)


def _claimed(root: Path, item: Path, files: dict[str, Any]) -> bool:
    """True for a file or folder a tracker made in the folder partialft gave it, recorded as
    claimed before the tracker started (a run killed before the tracker's files were recorded
    by name, see :mod:`partialft.training.logfiles`)."""
    parts = item.relative_to(root).parts
    for i in range(1, len(parts)):
        entry = files.get("/".join(parts[:i]))
        if isinstance(entry, dict) and isinstance(entry.get("claim"), dict):
            return claims(entry["claim"], "/".join(parts[i:]), item)
    return False


def _foreign_dir(sub: Path, rel: str, files: dict[str, Any], dirs: dict[str, Any]) -> list[Path]:
    """What is foreign in a sub-directory the walk does not enter."""
    if sub.is_symlink():
        return [] if _unchanged(sub, files.get(rel)) else [sub]
    if is_tmp(sub.name):
        return []  # partialft's temporary folder (a bench's scratch runs)
    if rel not in dirs:
        return [sub]  # a marked directory this one did not create: someone else's
    if read_marker(sub) is None:  # a stage killed before its marker landed
        return sorted(p for p in sub.iterdir() if not is_lock(p.name) and not is_tmp(p.name))
    return foreign_entries(sub, dirs[rel])


def _unchanged(item: Path, entry: Any) -> bool:
    """True when ``item`` is a file the manifest entry records, with the bytes recorded (or the
    previous version's: a crash may come between recording a write and its rename)."""
    if not isinstance(entry, dict):
        return False
    if item.is_symlink():
        return "link" in entry and os.readlink(item) == entry["link"]
    if entry.get("open"):
        return True  # created by a tracker partialft ran, killed before it closed
    if entry.get("embedded"):  # the model card carrying the marker: its text before it
        return item.name == CARD and body_sha256(item) == entry.get("sha256")
    size = item.stat().st_size
    candidates = [c for c in (entry, entry.get("prev")) if isinstance(c, dict)
                  and c.get("size") == size and c.get("sha256")]
    return bool(candidates) and sha256_and_size(item)[0] in {c["sha256"] for c in candidates}


def leftovers_only(path: Path) -> bool:
    """True when directory ``path`` holds nothing but partialft's lock and temporary files
    (a command killed before its marker landed): it may be used as if empty."""
    if not path.is_dir() or path.is_symlink():
        return False
    names = [p.name for p in path.iterdir()]
    return bool(names) and all(is_lock(name) or is_tmp(name) for name in names)


def check_claim(out: str | Path, kind: str, *, overwrite: bool = False, reuse: bool = False,
                inputs: Iterable[str | Path | None] = (), flag: str = "--out") -> bool:
    """Check ``out`` may be written as a ``kind`` directory; True when it must be cleared first.

    Nothing is created or deleted here: a verb calls this before minutes of work.
    """
    if str(out).strip() and Path(out).expanduser().is_symlink():  # resolved below: look first
        raise PartialFTError(f"{flag} {out} is a symbolic link; partialft writes only into a "
                             "real directory it can own, so name one (such as the link's "
                             "target) instead.")
    path = check_out_path(out, inputs, flag)
    _check_not_nested(path, out, kind, flag)
    if not path.exists() and not path.is_symlink():
        return False
    if not path.is_dir() or path.is_symlink():
        raise PartialFTError(f"{flag} {out} exists and is not a directory; partialft replaces "
                             "only directories it wrote, so choose another path.")
    entries = [p for p in path.iterdir() if not _ours(p.name) and not is_tmp(p.name)]
    marker = read_marker(path)
    if marker is None:
        if entries:
            raise option_error(
                f"{named(flag, out)} holds files partialft did not write (such as "
                f"{sorted(entries)[0].name}); partialft never writes into or deletes them, even "
                "with `overwrite=True`, so choose a new directory.")
        return False
    if not entries:
        return marker["kind"] != kind  # nothing in it: remark it with this kind
    if marker["kind"] != kind:
        raise option_error(_kind_message(flag, out, marker["kind"], kind))
    if overwrite:
        _check_replaceable(path, out, flag, marker)
        return True
    if reuse:
        return False
    raise option_error(_exists_message(flag, out, kind))


def _kind_message(flag: str, out: str | Path, found: str, kind: str) -> str:
    return (f"{named(flag, out)} is a partialft {found} directory, not {article(kind)} {kind} "
            f"one; `overwrite=True` replaces only an earlier {kind} output, so choose another "
            "directory.")


def _check_replaceable(path: Path, out: str | Path, flag: str, marker: dict[str, Any]) -> None:
    if marker.get("manifest") != MANIFEST_VERSION:
        raise option_error(
            f"{named(flag, out)} was written by a partialft older than its file records, so "
            "`overwrite=True` cannot tell its files from yours; delete the directory yourself "
            "or choose another one.")
    foreign = foreign_entries(path)
    if foreign:
        raise option_error(
            f"{named(flag, out)} holds {foreign[0].relative_to(path)}, which partialft did not "
            "write (or which changed since); `overwrite=True` replaces only what partialft "
            "wrote, so move it out first or choose another directory.")


def _check_not_nested(path: Path, out: str | Path, kind: str, flag: str) -> None:
    """Refuse an output inside another partialft output, except a pipeline's own stage."""
    owner = owner_of(path) or next(
        (p for p in path.parents if read_embedded(p) is not None), None)
    if owner is None:
        return
    marker = read_marker(owner)
    if marker is None:
        return
    rel = path.relative_to(owner).as_posix()  # both resolved: owner is one of path's parents
    if _held(owner) or _manifest(marker)[1].get(rel) == kind:
        return
    raise option_error(f"{named(flag, out)} is inside {owner}, a partialft {marker['kind']} "
                       "directory; outputs do not nest, so choose a directory outside it.")


def _exists_message(flag: str, out: str | Path, kind: str) -> str:
    if kind in ("train", "pretrain"):
        return (f"run dir {out} already exists; pass `resume=True` to continue it or "
                "`overwrite=True` to replace it.")
    return f"{named(flag, out)} already exists; pass `overwrite=True` to replace it."


def named(flag: str, value: str | Path) -> str:
    """``--out DIR`` as an error template (errors.option_error): ``out=DIR`` for a library
    caller, ``--out DIR`` on the command line."""
    text = str(value)
    if not flag.startswith("--") or "`" in text or "|" in text:
        return f"{flag} {text}"
    return f"`{flag[2:].replace('-', '_')}={text}`"


def make_dir(path: Path, flag: str = "--out") -> None:
    """``mkdir -p`` with one clear sentence when the system refuses."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PartialFTError(f"cannot create {flag} {path}: {reason}; choose a writable "
                             "directory.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PartialFTError(f"cannot write into {flag} {path}: permission denied; choose a "
                             "writable directory.")


def clear(path: Path, kind: str | None = None) -> None:
    """Delete what partialft wrote in ``path`` (checked again: nothing else may be there); the
    marker goes last, so a crash midway leaves a marked directory a rerun can still clear."""
    foreign = foreign_entries(path, kind)
    if foreign:
        raise PartialFTError(f"{path} holds {foreign[0].relative_to(path)}, which partialft did "
                             "not write; it was left untouched, move it out first.")
    # a finished export's marker is its model card: it goes last too
    for child in sorted(path.iterdir(), key=lambda c: c.name == CARD):
        if _ours(child.name):
            continue
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (path / MARKER).unlink(missing_ok=True)


def remove_recorded(root: Path, rel: str) -> None:
    """Delete ``root/rel`` (a file, or the files in a folder) where the manifest of marked
    directory ``root`` records it unchanged; anything else there is left, and so are folders
    still holding it."""
    marker = read_marker(root)
    target = root / rel
    if marker is None or not os.path.lexists(target):
        return
    files = _manifest(marker)[0]
    items = [target]
    if target.is_dir() and not target.is_symlink():  # deepest first: folders after their files
        items = [*sorted(target.rglob("*"), reverse=True), target]
    emptied: set[Path] = set()  # folders something was deleted from (a user's empty one stays)
    for item in items:
        if item.is_dir() and not item.is_symlink():
            if item in emptied and not any(item.iterdir()):
                item.rmdir()
                emptied.add(item.parent)
        elif _unchanged(item, files.get(item.relative_to(root).as_posix())) or _claimed(
                root, item, files):
            item.unlink()
            emptied.add(item.parent)


def remove_stale_tmp(path: Path) -> None:
    """Remove partialft's temporary files and folders a killed command left in ``path`` and its
    unmarked subfolders (only names of :data:`partialft.utils.io.TMP_RE`'s form)."""
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        for name in list(dirnames):
            if is_tmp(name) and not (here / name).is_symlink():
                shutil.rmtree(here / name, ignore_errors=True)
                dirnames.remove(name)
            elif read_marker(here / name) is not None:
                dirnames.remove(name)
        for name in filenames:
            if is_tmp(name):
                (here / name).unlink(missing_ok=True)


def remove_marked(path: Path) -> None:
    """Delete directory ``path`` only when it is a marked partialft directory."""
    if path.is_dir() and not path.is_symlink() and read_marker(path) is not None:
        shutil.rmtree(path)
